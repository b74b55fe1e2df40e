//! A slow TCP proxy on 127.0.0.1: forwards every connection to a target address (a test
//! registry) at a limited byte rate in each direction, so a pull or push of a few MB lasts
//! long enough for progress views to be watched while it runs.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A running proxy; stops accepting connections when dropped.
pub struct Throttle {
    addr: String,
    stop: Arc<AtomicBool>,
}

impl Throttle {
    /// Proxies to `target` (`host:port`), each direction of each connection at most
    /// `bytes_per_sec`.
    pub fn start(target: &str, bytes_per_sec: u64) -> Throttle {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the throttle proxy");
        let addr = listener.local_addr().unwrap().to_string();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let target = target.to_string();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(upstream) = TcpStream::connect(&target) else {
                            continue;
                        };
                        pipe(
                            client.try_clone().unwrap(),
                            upstream.try_clone().unwrap(),
                            bytes_per_sec,
                        );
                        pipe(upstream, client, bytes_per_sec);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => break,
                }
            }
        });
        Throttle { addr, stop }
    }

    /// `127.0.0.1:PORT`, to use in image references instead of the registry's address.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies `from` to `to` on a thread of its own, sleeping to stay under `rate` bytes a second.
fn pipe(mut from: TcpStream, mut to: TcpStream, rate: u64) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
            // Per chunk, so an idle keep-alive connection saves up no burst.
            std::thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
