fn main() -> std::process::ExitCode {
    osvc_agent::cli::svcmgr::main()
}
