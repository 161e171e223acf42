//! The MAOS testbed: a stand-in Kubernetes API server, a process kubelet, a Claude stand-in
//! and service launchers, plus the helpers the end-to-end tests share.

pub mod apiserver;
pub mod binaries;
pub mod claude_standin;
pub mod cluster;
pub mod demo;
pub mod kubelet;
pub mod launch;
pub mod procfs;
pub mod stack;
