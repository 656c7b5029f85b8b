//! A broker the bench runs itself, so that it can kill it with SIGKILL and
//! start it again on the same data: what `backlog --restart-cmd` measures
//! (acknowledged but lost) needs the broker to die mid-write, not to stop.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The broker's process and how to start it again.
pub struct Broker {
    cmd: String,
    addr: SocketAddr,
    child: Child,
}

impl Broker {
    /// Runs `cmd` with `sh -c` and waits until `addr` accepts connections.
    ///
    /// # Errors
    /// The command cannot run, exits, or does not listen within `timeout`.
    pub fn start(cmd: &str, addr: SocketAddr, timeout: Duration) -> Result<Broker, String> {
        if answers_connect(addr) {
            return Err(format!(
                "--restart-cmd: something already listens on {addr}"
            ));
        }
        let child = spawn(cmd)?;
        let mut b = Broker {
            cmd: cmd.to_string(),
            addr,
            child,
        };
        b.wait_listening(timeout)?;
        Ok(b)
    }

    fn wait_listening(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if answers_connect(self.addr) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("--restart-cmd exited ({status}) before listening"));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "--restart-cmd did not listen on {} within {timeout:?}",
                    self.addr
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the command again (after [`Broker::kill9`]) and waits for it
    /// to listen.
    ///
    /// # Errors
    /// As [`Broker::start`].
    pub fn restart(&mut self, timeout: Duration) -> Result<(), String> {
        self.child = spawn(&self.cmd)?;
        self.wait_listening(timeout)
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(mut self, grace: Duration) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
    }
}

/// True if `addr` answers an MQTT CONNECT with a CONNACK. A TCP connect is
/// not enough: a killed broker's listening socket can outlive its process
/// for a moment (an io_uring ring is torn down after the process is gone)
/// and accept connections that are then reset.
fn answers_connect(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    // CONNECT, MQTT 3.1.1, clean session, keep-alive 60, client id "rb-probe".
    let connect: &[u8] = b"\x10\x14\x00\x04MQTT\x04\x02\x00\x3c\x00\x08rb-probe";
    let mut ack = [0u8; 4];
    let ok = s.write_all(connect).is_ok() && s.read_exact(&mut ack).is_ok() && ack[0] == 0x20;
    let _ = s.write_all(b"\xe0\x00");
    ok
}

fn spawn(cmd: &str) -> Result<Child, String> {
    // `exec`, so that the shell's pid is the broker's and SIGKILL reaches it.
    Command::new("sh")
        .arg("-c")
        .arg(format!("exec {cmd}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("--restart-cmd cannot run: {e}"))
}
