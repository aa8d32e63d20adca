//! Echoes its arguments as `arg[i]=VALUE` lines, then its environment as sorted
//! `env:KEY=VALUE` lines. Tests use it to check that the OCI process args and env
//! reach the guest unchanged (including `arg[0]`).

fn main() {
    for (i, arg) in std::env::args().enumerate() {
        println!("arg[{i}]={arg}");
    }
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    vars.sort();
    for (key, value) in vars {
        println!("env:{key}={value}");
    }
}
