//! Nodes as separate hosts on one machine: one network namespace per node,
//! each joined to a bridge in the root namespace by a veth pair, addresses
//! in a private /24. Cutting a node's veth is a real partition (the kernel
//! drops its packets), not a simulated one. Needs root and `ip`.
//!
//! The root namespace has `.254` on the bridge, so the test itself (a
//! client) reaches every node that is not cut off.

use std::net::Ipv4Addr;
use std::process::Command;

use crate::error::Error;

/// A private network of `n` nodes, removed when dropped unless detached.
pub struct Network {
    id: String,
    bridge: String,
    nodes: Vec<NetNode>,
    subnet: [u8; 3],
    detached: bool,
}

/// A network left in place by [`Network::detach`] (the sandbox), described
/// well enough to cut, heal and remove it later from another process.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct NetworkState {
    pub bridge: String,
    pub host_ip: Ipv4Addr,
    pub nodes: Vec<NetNode>,
}

impl NetworkState {
    /// Cuts node `i` off (its host-side veth down).
    pub fn cut(&self, i: usize) -> Result<(), Error> {
        ip(&["link", "set", &self.nodes[i].veth, "down"])
    }

    /// Reconnects node `i`.
    pub fn heal(&self, i: usize) -> Result<(), Error> {
        ip(&["link", "set", &self.nodes[i].veth, "up"])
    }

    /// Whether node `i` is cut off.
    pub fn is_cut(&self, i: usize) -> bool {
        Command::new("ip")
            .args(["-o", "link", "show", &self.nodes[i].veth])
            .output()
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stdout);
                // `state DOWN` or the admin flag missing from `<...UP...>`.
                !text.split('>').next().unwrap_or("").contains(",UP")
            })
            .unwrap_or(false)
    }

    /// Deletes the namespaces, veths and bridge (best effort: what is
    /// already gone is skipped).
    pub fn remove(&self) {
        remove(&self.bridge, &self.nodes);
    }
}

fn remove(bridge: &str, nodes: &[NetNode]) {
    for node in nodes {
        // Deleting the namespace deletes its end of the veth pair, and
        // with it the host end.
        let _ = ip(&["netns", "delete", &node.ns]);
        let _ = ip(&["link", "delete", &node.veth]);
    }
    forward_rule(bridge, "-D");
    let _ = ip(&["link", "delete", bridge]);
}

/// Beside Docker the FORWARD policy is DROP and `br_netfilter` sends frames
/// crossing a Linux bridge through FORWARD, so node-to-node traffic on the
/// test bridge would be dropped: accept what stays on this bridge (`-I`),
/// or remove that rule again (`-D`). Without iptables there is no filter
/// to pass. Best effort on removal.
fn forward_rule(bridge: &str, op: &str) -> bool {
    if crate::tools::which("iptables").is_none() {
        return true;
    }
    Command::new("iptables")
        .args([
            "-w", op, "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct NetNode {
    /// The namespace (`ip netns exec <ns> …`).
    pub ns: String,
    /// The host side of the veth pair (cut it to partition the node).
    pub veth: String,
    pub ip: Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<(), Error> {
    run("ip", args)
}

/// Runs `program` with `args`; a failure names the command, its status
/// and what it printed on stderr.
pub fn run(program: &str, args: &[&str]) -> Result<(), Error> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::io(format!("running {program}"), e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Command {
        command: format!("{program} {}", args.join(" ")),
        status: out.status.to_string(),
        output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

impl Network {
    /// Creates the bridge and `n` namespaces. Names are unique per process
    /// (interface names are at most 15 characters).
    pub fn create(n: usize) -> Result<Self, Error> {
        if !nix::unistd::Uid::effective().is_root() {
            return Err(Error::Other("network namespaces need root".into()));
        }
        if crate::tools::which("ip").is_none() {
            return Err(Error::Missing {
                what: "ip (iproute2)".into(),
                install: "apt-get install -y iproute2".into(),
            });
        }
        // 10.201.x.0/24 .. 10.250.x.0/24, from the process id and a random
        // byte, retried if the bridge name is taken.
        for attempt in 0..8u64 {
            let r = sidecar_kit::telemetry::random_u64() ^ attempt;
            let id = format!(
                "{:x}",
                (u64::from(std::process::id()) << 8 | (r & 0xff)) & 0xffffff
            );
            let subnet = [10, 201 + (r % 50) as u8, ((r >> 8) % 250) as u8 + 1];
            let bridge = format!("aub{id}");
            if ip(&["link", "add", &bridge, "type", "bridge"]).is_err() {
                continue;
            }
            let mut net = Network {
                id,
                bridge,
                nodes: Vec::new(),
                subnet,
                detached: false,
            };
            net.setup(n)?;
            return Ok(net);
        }
        Err(Error::Other("could not create a test bridge".into()))
    }

    fn setup(&mut self, n: usize) -> Result<(), Error> {
        let [a, b, c] = self.subnet;
        let host_ip = format!("{a}.{b}.{c}.254/24");
        ip(&["addr", "add", &host_ip, "dev", &self.bridge])?;
        if !forward_rule(&self.bridge, "-I") {
            return Err(Error::Other(format!(
                "iptables -I FORWARD -i {0} -o {0} -j ACCEPT failed: the test bridge's traffic \
                 would be dropped by a FORWARD policy of DROP (Docker's)",
                self.bridge
            )));
        }
        ip(&["link", "set", &self.bridge, "up"])?;
        for i in 0..n {
            let ns = format!("aurora-{}-{i}", self.id);
            let veth = format!("auv{}n{i}", self.id);
            let peer = format!("aup{}n{i}", self.id);
            let node_ip = Ipv4Addr::new(a, b, c, (i + 1) as u8);
            ip(&["netns", "add", &ns])?;
            // Recorded at once so Drop removes it even if a later step fails.
            self.nodes.push(NetNode {
                ns: ns.clone(),
                veth: veth.clone(),
                ip: node_ip,
            });
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer])?;
            ip(&["link", "set", &peer, "netns", &ns])?;
            ip(&["link", "set", &veth, "master", &self.bridge])?;
            ip(&["link", "set", &veth, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{node_ip}/24"),
                "dev",
                &peer,
            ])?;
            ip(&["-n", &ns, "link", "set", &peer, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    pub fn nodes(&self) -> &[NetNode] {
        &self.nodes
    }

    pub fn node(&self, i: usize) -> &NetNode {
        &self.nodes[i]
    }

    /// The root namespace's address on the bridge.
    pub fn host_ip(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 254)
    }

    /// Cuts node `i` off from every other node and from the test.
    pub fn cut(&self, i: usize) -> Result<(), Error> {
        ip(&["link", "set", &self.nodes[i].veth, "down"])
    }

    /// Reconnects node `i`.
    pub fn heal(&self, i: usize) -> Result<(), Error> {
        ip(&["link", "set", &self.nodes[i].veth, "up"])
    }

    /// Cuts the link between nodes `i` and `j` only, both ways, as a
    /// switch that fails between two ports would: packets are dropped (no
    /// RST, no ICMP), every other path stays up. Each node's namespace
    /// drops what comes from or goes to the other (iptables in the node's
    /// own netfilter tables).
    pub fn cut_between(&self, i: usize, j: usize) -> Result<(), Error> {
        self.peer_rules(i, j, "-A")?;
        self.peer_rules(j, i, "-A")
    }

    /// Undoes [`Network::cut_between`].
    pub fn heal_between(&self, i: usize, j: usize) -> Result<(), Error> {
        self.peer_rules(i, j, "-D")?;
        self.peer_rules(j, i, "-D")
    }

    /// Drops what node `i` sends to node `j`, and nothing else: `j`
    /// still reaches `i`, but no answer comes back (one-way loss, as a
    /// broken link or an asymmetric firewall gives). For TCP this blocks
    /// new connections both ways (the handshake needs both); connections
    /// already open carry data from `j` to `i` only.
    pub fn cut_one_way(&self, i: usize, j: usize) -> Result<(), Error> {
        self.rule(i, "-A", "OUTPUT", "-d", j)
    }

    /// Undoes [`Network::cut_one_way`].
    pub fn heal_one_way(&self, i: usize, j: usize) -> Result<(), Error> {
        self.rule(i, "-D", "OUTPUT", "-d", j)
    }

    /// Drops the packets node `i` sends to node `j` that carry `needle`
    /// (iptables' string match): a message-level fault, e.g. one kind of
    /// HTTP request lost while everything else between the two gets
    /// through. A TCP segment dropped this way is retransmitted and
    /// dropped again, so the request stalls until its sender gives up.
    pub fn drop_messages(&self, i: usize, j: usize, needle: &str) -> Result<(), Error> {
        self.string_rule(i, "-A", j, needle)
    }

    /// Undoes [`Network::drop_messages`].
    pub fn pass_messages(&self, i: usize, j: usize, needle: &str) -> Result<(), Error> {
        self.string_rule(i, "-D", j, needle)
    }

    fn string_rule(&self, i: usize, op: &str, j: usize, needle: &str) -> Result<(), Error> {
        let to = self.nodes[j].ip.to_string();
        self.iptables(
            i,
            &[
                op, "OUTPUT", "-d", &to, "-p", "tcp", "-m", "string", "--algo", "bm", "--string",
                needle, "-j", "DROP",
            ],
        )
    }

    /// `iptables -w ARGS` inside node `i`'s namespace.
    fn iptables(&self, i: usize, args: &[&str]) -> Result<(), Error> {
        let mut all = vec!["netns", "exec", &self.nodes[i].ns, "iptables", "-w"];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Stops (SIGSTOP) every process in node `i`'s namespace, as a frozen
    /// VM or a long stall would: no packet is answered, no RST is sent, no
    /// timer fires there until [`Network::resume`].
    pub fn pause(&self, i: usize) -> Result<(), Error> {
        self.signal_all(i, nix::sys::signal::Signal::SIGSTOP)
    }

    /// Continues (SIGCONT) every process in node `i`'s namespace.
    pub fn resume(&self, i: usize) -> Result<(), Error> {
        self.signal_all(i, nix::sys::signal::Signal::SIGCONT)
    }

    fn signal_all(&self, i: usize, sig: nix::sys::signal::Signal) -> Result<(), Error> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.nodes[i].ns])
            .output()
            .map_err(|e| Error::io("running ip netns pids", e))?;
        if !out.status.success() {
            return Err(Error::Other(format!(
                "ip netns pids {}: {}",
                self.nodes[i].ns,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        for pid in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // A process that exited since the listing is no error.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
        Ok(())
    }

    fn rule(&self, i: usize, op: &str, chain: &str, dir: &str, j: usize) -> Result<(), Error> {
        let other = self.nodes[j].ip.to_string();
        self.iptables(i, &[op, chain, dir, &other, "-j", "DROP"])
    }

    fn peer_rules(&self, i: usize, j: usize, op: &str) -> Result<(), Error> {
        self.rule(i, op, "INPUT", "-s", j)?;
        self.rule(i, op, "OUTPUT", "-d", j)
    }

    /// Describes the network (it is still removed when this handle drops).
    pub fn state(&self) -> NetworkState {
        NetworkState {
            bridge: self.bridge.clone(),
            host_ip: self.host_ip(),
            nodes: self.nodes.clone(),
        }
    }

    /// Leaves the network in place when this handle drops and describes it.
    pub fn detach(mut self) -> NetworkState {
        self.detached = true;
        self.state()
    }

    /// A command that runs `program` inside node `i`'s namespace.
    pub fn command(
        &self,
        i: usize,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.nodes[i].ns]).arg(program);
        cmd
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if !self.detached {
            remove(&self.bridge, &self.nodes);
        }
    }
}
