//! Other processes on this host, by pid.

/// `true` when `pid` names a live process. The kernel answers whether the
/// pid exists (`kill(pid, 0)`; "not permitted" means it exists); a zombie
/// (exited, not yet reaped by a parent that may never reap it, such as a
/// container's PID 1) counts as dead when `/proc` says so. Where `/proc` is
/// unreadable (another mount namespace, `hidepid`) the kernel's answer
/// stands: a process that exists is never taken for dead.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    let exists = match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    alive(exists, stat.as_deref())
}

/// The decision: the kernel says the pid exists, and `/proc/<pid>/stat`
/// (when readable) does not show it exited.
fn alive(exists: bool, stat: Option<&str>) -> bool {
    if !exists {
        return false;
    }
    // The state follows the parenthesised command name, which may itself
    // hold spaces and parentheses.
    match stat.and_then(|s| s.rsplit_once(')')) {
        Some((_, rest)) => !rest.trim_start().starts_with(['Z', 'X']),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decision() {
        assert!(!alive(false, None));
        assert!(!alive(false, Some("12 (x) S 1")));
        assert!(alive(true, Some("12 (postgres: (main)) S 1")));
        assert!(!alive(true, Some("12 (postgres) Z 1")));
        assert!(!alive(true, Some("12 (a) b) X 1")));
        // /proc unreadable: the kernel's answer stands.
        assert!(alive(true, None));
    }

    #[test]
    fn live_zombie_and_reaped_processes() {
        #![allow(clippy::unwrap_used)]
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
        assert!(!pid_alive(u32::MAX));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited but not reaped: a zombie, which is dead.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while pid_alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!pid_alive(pid), "a zombie counts as dead");
        child.wait().unwrap();
        assert!(!pid_alive(pid), "reaped");
    }
}
