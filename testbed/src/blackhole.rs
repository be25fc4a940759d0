//! A host that vanished: every packet to a loopback TCP port is dropped
//! while the handle lives (iptables, so root). A dead WireGuard peer sends no
//! RST, so a connection to it hangs rather than fails; this is how tests
//! show a component does not hang with it.

use local_fleet::Error as TestbedError;

/// Drops every TCP packet to `127.0.0.1:<port>` until dropped.
#[derive(Debug)]
pub struct Blackhole {
    port: u16,
}

fn rule(port: u16, op: &str) -> Result<(), TestbedError> {
    let out = std::process::Command::new("iptables")
        .args(["-w", op, "INPUT", "-i", "lo", "-p", "tcp", "--dport"])
        .arg(port.to_string())
        .args(["-j", "DROP"])
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => TestbedError::Missing {
                what: "iptables".into(),
                install: "apt-get install -y iptables".into(),
            },
            _ => TestbedError::io("running iptables", e),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TestbedError::Command {
            command: format!(
                "iptables {op} INPUT -i lo -p tcp --dport {port} -j DROP (needs root)"
            ),
            status: out.status.to_string(),
            output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

impl Blackhole {
    pub fn new(port: u16) -> Result<Blackhole, TestbedError> {
        rule(port, "-I")?;
        Ok(Blackhole { port })
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        let _ = rule(self.port, "-D");
    }
}
