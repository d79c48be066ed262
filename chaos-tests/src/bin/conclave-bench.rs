//! bench (wip)
fn main() {}
