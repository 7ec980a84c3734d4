//! `examples/latency_proxy` in front of a test broker's port: what a
//! command does at a long round trip.

/// `examples/latency_proxy` (built with the tests) in front of `target_port`,
/// adding `delay_ms` each way; killed when dropped.
pub struct LatencyProxy {
    child: std::process::Child,
    pub port: u16,
}

impl LatencyProxy {
    pub fn start(target_port: u16, delay_ms: u64) -> LatencyProxy {
        let executable = super::example("latency_proxy");
        let mut child = std::process::Command::new(&executable)
            .args(["--listen", "0", "--target", &target_port.to_string()])
            .args(["--delay-ms", &delay_ms.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", executable.display()));
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        // "latency-proxy: 127.0.0.1:PORT -> ..."
        let port = line
            .split_whitespace()
            .nth(1)
            .and_then(|listen| listen.rsplit(':').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        LatencyProxy { child, port }
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A vhost's AMQP URL and management URL through latency proxies adding
/// `delay_ms` each way; the proxies stop when this drops.
pub struct SlowRoute {
    _amqp: LatencyProxy,
    _http: LatencyProxy,
    pub url: String,
    pub management: String,
}

impl super::TestVhost {
    pub fn through_latency(&self, delay_ms: u64) -> SlowRoute {
        let amqp_port: u16 = super::amqp_host_port()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let http_port = url::Url::parse(super::management())
            .unwrap()
            .port()
            .unwrap();
        let amqp = LatencyProxy::start(amqp_port, delay_ms);
        let http = LatencyProxy::start(http_port, delay_ms);
        SlowRoute {
            url: format!(
                "amqp://guest:guest@127.0.0.1:{}/{}",
                amqp.port,
                super::encode(&self.name)
            ),
            management: format!("http://127.0.0.1:{}", http.port),
            _amqp: amqp,
            _http: http,
        }
    }
}
