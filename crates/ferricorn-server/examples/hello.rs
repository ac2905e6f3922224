//! The front end with a pure-Rust "hello" app: the physical limit the Python bridges are
//! measured against (`cargo run --release --example hello -- 127.0.0.1:9000`).

use std::sync::Arc;

use bytes::Bytes;
use ferricorn_server::{serve, App, Listener, Reply, Request, ResponseBody, ServerConfig};

struct Hello;

impl App for Hello {
    fn call(&self, _req: Request) -> Reply {
        let mut resp = http::Response::new(ResponseBody::full(Bytes::from_static(b"Hello, World!\n")));
        resp.headers_mut()
            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
        Reply::Ready(resp)
    }
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9000".into());
    let listener = std::net::TcpListener::bind(addr)?;
    serve(
        vec![Listener::Tcp(listener)],
        Arc::new(Hello),
        ServerConfig::default(),
        |_| {},
    )?;
    Ok(())
}
