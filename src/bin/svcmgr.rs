//! `svcmgr`: create, inspect and act on a service of the cluster agent.

fn main() -> std::process::ExitCode {
    osvc_agent::cli::svcmgr::main()
}
