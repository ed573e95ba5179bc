// std: a Rust std program (Debian's rustc, wasm32-wasi): arguments,
// environment, files written and read back, a directory listing, and
// std::process::exit with the status given as its first argument. Built
// with debug info (-g), so that exit's cost with DWARF shows.
use std::env;
use std::fs;
use std::io::Write;
use std::process;

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    println!("args: {:?}", args);
    let mut vars: Vec<(String, String)> = env::vars().filter(|(k, _)| k.starts_with("PROG_")).collect();
    vars.sort();
    println!("env: {:?}", vars);
    let dir = "/tmp/rust-std";
    fs::create_dir_all(dir).expect("create dir");
    for i in 0..3 {
        let mut f = fs::File::create(format!("{}/f{}.txt", dir, i)).expect("create file");
        writeln!(f, "file {} of 3", i).expect("write");
    }
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in &names {
        let text = fs::read_to_string(format!("{}/{}", dir, n)).expect("read");
        print!("{}: {}", n, text);
    }
    let sum: u64 = (1..=1_000_000u64).map(|x| x * x % 7).sum();
    println!("sum: {}", sum);
    std::io::stdout().flush().expect("flush");
    let status = args.first().and_then(|s| s.parse().ok()).unwrap_or(0);
    process::exit(status);
}
