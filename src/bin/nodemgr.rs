//! `nodemgr`: run and steer the cluster agent daemon of this node.

fn main() -> std::process::ExitCode {
    osvc_agent::cli::nodemgr::main()
}
