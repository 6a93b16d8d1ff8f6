//! The log's module boundary: nothing under `src/log/` talks to the network.

const NETWORK_APIS: [&str; 5] = [
    "std::net",
    "glommio::net",
    "TcpStream",
    "UdpSocket",
    "TcpListener",
];

#[test]
fn no_file_of_the_log_module_uses_a_network_api() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/log");
    let mut checked = 0;
    let mut stack = vec![dir];
    while let Some(dir) = stack.pop() {
        for item in std::fs::read_dir(&dir).unwrap() {
            let path = item.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.file_name().is_some_and(|name| name == "boundaries.rs") {
                continue; // this file names the APIs it looks for
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for api in NETWORK_APIS {
                assert!(!text.contains(api), "{} uses {api}", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked > 10, "the scan found the log's files");
}
