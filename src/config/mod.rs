//! Placeholder until the node.conf module lands.
