fn main() -> std::process::ExitCode {
    osvc_agent::cli::nodemgr::main()
}
