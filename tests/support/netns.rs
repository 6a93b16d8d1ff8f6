//! Separate hosts on one machine for the partition tests: one network namespace per node,
//! each joined by a veth pair to a bridge in the test's own namespace (where the test's
//! clients run and reach every node). A node is cut off from the others with blackhole
//! routes on both sides, which leaves the test's clients able to reach it. Everything is
//! removed when the `TestNet` is dropped, even after a failed assertion.

use std::process::Command;

/// The namespaces, links and addresses of one test.
pub struct TestNet {
    prefix: String,
    third_octet: u32,
    nodes: u32,
}

/// Runs `ip` with `args`; panics with its error output if it fails.
fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl TestNet {
    /// Creates `nodes` namespaces on a private /24 (needs root and iproute2).
    pub fn create(nodes: u32) -> TestNet {
        assert!(
            super::is_root(),
            "the partition tests create network namespaces and need root"
        );
        let pid = std::process::id();
        let net = TestNet {
            prefix: format!("kt{}", pid % 100_000),
            third_octet: 10 + pid % 240,
            nodes,
        };
        net.remove();
        let bridge = net.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"]);
        let bridge_address = format!("{}/24", net.host_address());
        ip(&["addr", "add", &bridge_address, "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        for node in 0..nodes {
            let namespace = net.namespace(node);
            let outside = format!("{}v{node}", net.prefix);
            let inside = format!("{}i{node}", net.prefix);
            ip(&["netns", "add", &namespace]);
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ]);
            ip(&["link", "set", &inside, "netns", &namespace]);
            ip(&["link", "set", &outside, "master", &bridge]);
            ip(&["link", "set", &outside, "up"]);
            let address = format!("{}/24", net.address(node));
            ip(&[
                "netns", "exec", &namespace, "ip", "addr", "add", &address, "dev", &inside,
            ]);
            ip(&[
                "netns", "exec", &namespace, "ip", "link", "set", &inside, "up",
            ]);
            ip(&["netns", "exec", &namespace, "ip", "link", "set", "lo", "up"]);
        }
        net
    }

    /// The namespace of node `node` (0-based).
    pub fn namespace(&self, node: u32) -> String {
        format!("{}n{node}", self.prefix)
    }

    /// The address of node `node` (0-based).
    pub fn address(&self, node: u32) -> String {
        format!("10.213.{}.{}", self.third_octet, node + 1)
    }

    /// The test's own address on the bridge.
    fn host_address(&self) -> String {
        format!("10.213.{}.254", self.third_octet)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.prefix)
    }

    /// Cuts node `node` off from every other node (both directions); the test's clients
    /// still reach it.
    pub fn isolate(&self, node: u32) {
        self.routes("add", node);
    }

    /// Undoes `isolate`.
    pub fn heal(&self, node: u32) {
        self.routes("del", node);
    }

    fn routes(&self, action: &str, node: u32) {
        for other in (0..self.nodes).filter(|&o| o != node) {
            for (from, to) in [(node, other), (other, node)] {
                let target = format!("{}/32", self.address(to));
                ip(&[
                    "netns",
                    "exec",
                    &self.namespace(from),
                    "ip",
                    "route",
                    action,
                    "blackhole",
                    &target,
                ]);
            }
        }
    }

    /// Every node stops reaching the test's own address (their answers to the test's
    /// clients are dropped; what the clients send still arrives, and the nodes still
    /// reach each other).
    pub fn drop_answers_to_host(&self) {
        self.host_routes("add");
    }

    /// Undoes `drop_answers_to_host`.
    pub fn restore_answers_to_host(&self) {
        self.host_routes("del");
    }

    fn host_routes(&self, action: &str) {
        let target = format!("{}/32", self.host_address());
        for node in 0..self.nodes {
            ip(&[
                "netns",
                "exec",
                &self.namespace(node),
                "ip",
                "route",
                action,
                "blackhole",
                &target,
            ]);
        }
    }

    /// Removes whatever of this test's namespaces and links exists.
    fn remove(&self) {
        for node in 0..self.nodes {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.namespace(node)])
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .output();
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        self.remove();
    }
}
