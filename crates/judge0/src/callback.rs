//! Callbacks: `PUT callback_url` with Judge0's body (base64, the default
//! fields), at most three tries, retried only when no response came (a
//! connect error or a timeout), from a bounded pool of blocking workers so
//! a slow receiver never holds a run. Addresses that are loopback, private,
//! link-local, shared, unspecified or cloud metadata are refused unless an
//! operator allows them by CIDR; the check runs when the submission is made
//! and again on the addresses the delivery connects to.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

/// An address range, `10.0.0.0/8` or `::1/128` (a bare address is a /32 or
/// /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("{s:?} is not an address range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("{s:?}: bad prefix length"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The address in the top bits of a `u128`.
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u128::from(u32::from(v)) << 96,
        IpAddr::V6(v) => u128::from(v),
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let (a, b) = (bits(self.addr), bits(ip));
        // Both sit in the top bits (IPv4 shifted up by 96).
        let shift = u32::from(self.prefix);
        shift == 0 || (a >> (128 - shift)) == (b >> (128 - shift))
    }
}

/// IPv4-mapped IPv6 addresses are their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v) => v.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Addresses no callback goes to unless allowed.
fn forbidden(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v) => {
            let o = v.octets();
            v.is_loopback()
                || v.is_private()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast()
                || v.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            v.is_loopback()
                || v.is_unspecified()
                || v.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Whether a callback may go to `ip`.
pub fn allowed(ip: IpAddr, allow: &[Cidr]) -> bool {
    !forbidden(ip) || allow.iter().any(|c| c.contains(ip))
}

/// The host and port of an `http://` URL (callbacks are plain HTTP or
/// HTTPS-less: this node makes no TLS connections).
fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after.strip_prefix(':').map_or(Some(80), |p| p.parse().ok())?;
        return Some((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_owned(), p.parse().ok()?)),
        None => Some((authority.to_owned(), 80)),
    }
    .filter(|(h, _)| !h.is_empty())
}

/// Resolves a callback URL and refuses it when any address it resolves to
/// is not allowed (blocking: DNS).
pub fn check_url(url: &str, allow: &[Cidr]) -> Result<Vec<SocketAddr>, String> {
    let (host, port) = host_port(url).ok_or_else(|| "must be an http:// URL".to_owned())?;
    let addrs: Vec<SocketAddr> =
        (host.as_str(), port).to_socket_addrs().map_err(|_| format!("host {host:?} does not resolve"))?.collect();
    if addrs.is_empty() {
        return Err(format!("host {host:?} does not resolve"));
    }
    if let Some(a) = addrs.iter().find(|a| !allowed(a.ip(), allow)) {
        return Err(format!("resolves to {}, an address callbacks may not go to", a.ip()));
    }
    Ok(addrs)
}

/// Connects only to the addresses [`check_url`] allowed.
struct Checked(Arc<Vec<Cidr>>);

impl ureq::Resolver for Checked {
    fn resolve(&self, netloc: &str) -> std::io::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = netloc.to_socket_addrs()?.collect();
        if addrs.iter().any(|a| !allowed(a.ip(), &self.0)) {
            return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, "callback address not allowed"));
        }
        Ok(addrs)
    }
}

/// The pool of callback deliveries.
pub struct Callbacks {
    agent: ureq::Agent,
    allow: Arc<Vec<Cidr>>,
    /// Deliveries at once; more wait for a place (up to `queue`).
    workers: Arc<Semaphore>,
    /// Deliveries waiting or in flight; beyond it callbacks are dropped.
    queue: Arc<Semaphore>,
    tries: u32,
}

impl Callbacks {
    pub const TRIES: u32 = 3;
    pub const TIMEOUT: Duration = Duration::from_secs(5);

    pub fn new(allow: Vec<Cidr>, workers: usize, queue: usize) -> Callbacks {
        let allow = Arc::new(allow);
        let agent = ureq::AgentBuilder::new().timeout(Self::TIMEOUT).resolver(Checked(allow.clone())).build();
        Callbacks {
            agent,
            allow,
            workers: Arc::new(Semaphore::new(workers)),
            queue: Arc::new(Semaphore::new(queue)),
            tries: Self::TRIES,
        }
    }

    pub fn allow(&self) -> &[Cidr] {
        &self.allow
    }

    /// Sends `body` in the background; never waits for the receiver. The
    /// handle says whether it was delivered (`None`: dropped, the pool is
    /// full).
    pub fn send(&self, url: String, body: Vec<u8>) -> Option<tokio::task::JoinHandle<bool>> {
        let Ok(place) = self.queue.clone().try_acquire_owned() else {
            tracing::warn!("callback dropped: too many callbacks pending");
            return None;
        };
        let (agent, workers, tries) = (self.agent.clone(), self.workers.clone(), self.tries);
        Some(tokio::spawn(async move {
            let _place = place;
            let Ok(_worker) = workers.acquire_owned().await else { return false };
            let delivered = tokio::task::spawn_blocking(move || {
                for attempt in 1..=tries {
                    match agent.put(&url).set("Content-Type", "application/json").send_bytes(&body) {
                        // Any answer is a delivery, as in Judge0.
                        Ok(_) | Err(ureq::Error::Status(..)) => return true,
                        Err(e) => tracing::info!(attempt, error = %e, "callback not delivered"),
                    }
                }
                false
            })
            .await
            .unwrap_or(false);
            if !delivered {
                tracing::warn!("callback given up");
            }
            delivered
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_refused_unless_allowed() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
        ] {
            assert!(!allowed(ip(a), &[]), "{a} must be refused");
        }
        assert!(allowed(ip("93.184.216.34"), &[]));
        let lo: Cidr = "127.0.0.0/8".parse().expect("cidr");
        assert!(allowed(ip("127.0.0.1"), &[lo]) && allowed(ip("::ffff:127.0.0.2"), &[lo]));
        assert!(!allowed(ip("10.0.0.1"), &[lo]));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("0.0.0.0/0".parse::<Cidr>().expect("all").contains(ip("10.0.0.1")));
        assert_eq!(host_port("http://[::1]:8080/x"), Some(("::1".into(), 8080)));
        assert_eq!(host_port("http://u:p@h/x"), Some(("h".into(), 80)));
        assert_eq!(host_port("https://h/"), None);
        assert!(check_url("http://127.0.0.1:9/", &[]).is_err());
        assert!(check_url("http://127.0.0.1:9/", &[lo]).is_ok());
    }

    /// Serves `answer` (or closes without one) to every connection,
    /// counting them.
    async fn receiver(answer: Option<&'static [u8]>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/cb", listener.local_addr().expect("addr"));
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                if let Some(a) = answer {
                    let _ = sock.write_all(a).await;
                }
            }
        });
        (url, count)
    }

    #[tokio::test]
    async fn retries_only_when_no_answer_came() {
        let lo: Cidr = "127.0.0.0/8".parse().expect("cidr");
        let callbacks = Callbacks::new(vec![lo], 2, 10);
        let (url, count) = receiver(None).await;
        let delivered = callbacks.send(url, b"{}".to_vec()).expect("queued").await.expect("task");
        assert!(!delivered);
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 3, "three tries");
        let (url, count) = receiver(Some(b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n")).await;
        assert!(callbacks.send(url, b"{}".to_vec()).expect("queued").await.expect("task"), "a 500 is an answer");
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1, "no retry after an answer");
        // A refused address is never connected to, even if a name resolves to it later.
        let strict = Callbacks::new(Vec::new(), 1, 10);
        let (url, count) = receiver(Some(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")).await;
        assert!(!strict.send(url, b"{}".to_vec()).expect("queued").await.expect("task"));
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
