//! Serves a checkpoint folder as a Hugging Face hub repository on localhost (the test suite's
//! stand-in hub), to measure `anec convert`'s download without the network.
//!
//! cargo run --release --example serve_hub -- DIR REPO_ID [ADDR]
//!
//! then, in another shell, `HF_ENDPOINT=<printed url> HF_HUB_CACHE=/tmp/cache anec convert
//! --model REPO_ID …`. Safetensors files are answered as the hub answers LFS files (a redirect
//! with the SHA-256 as ETag); it runs until interrupted.

#[path = "../tests/suite/hub_server.rs"]
mod hub_server;

use std::path::PathBuf;

/// The commit the folder is served as (any 40-hex value).
const COMMIT: &str = "5e7ab1e05e7ab1e05e7ab1e05e7ab1e05e7ab1e0";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, repo_id) = match (args.first(), args.get(1)) {
        (Some(d), Some(r)) => (PathBuf::from(d), r.clone()),
        _ => {
            eprintln!("usage: serve_hub DIR REPO_ID [ADDR]");
            std::process::exit(2);
        }
    };
    let addr = args.get(2).map_or("127.0.0.1:0", String::as_str);
    let t0 = std::time::Instant::now();
    let repo = hub_server::HubRepo::new(&repo_id).commit(COMMIT, Some("main"), &dir);
    eprintln!(
        "hashed {} in {:.1} s",
        dir.display(),
        t0.elapsed().as_secs_f64()
    );
    let server = hub_server::HubServer::start_on(addr);
    server.add(repo);
    println!("{}", server.url);
    loop {
        std::thread::park();
    }
}
