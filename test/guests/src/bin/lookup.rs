//! A name lookup through the guest's resolver (`wasi:sockets` ip-name-lookup under
//! wasip2): `lookup NAME...` prints `NAME: <address>[,<address>...]` for each name it
//! resolves and `NAME: failed: <error>` otherwise, then exits 0 if every name resolved and
//! 1 if not. Tests use it to check that a name comes from the pod's `/etc/hosts`
//! (hostAliases) and not from the node's. Under wasip1 there are no sockets and every
//! lookup fails.

use std::net::ToSocketAddrs;
use std::process::exit;

fn main() {
    let mut all_resolved = true;
    for name in std::env::args().skip(1) {
        match (name.as_str(), 0).to_socket_addrs() {
            Ok(addrs) => {
                let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
                ips.sort();
                ips.dedup();
                println!("{name}: {}", ips.join(","));
            }
            Err(e) => {
                all_resolved = false;
                println!("{name}: failed: {e}");
            }
        }
    }
    exit(if all_resolved { 0 } else { 1 });
}
