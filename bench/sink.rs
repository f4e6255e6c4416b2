//! Upload sink for bench/run.sh: a tiny HTTP/1.1 server (std only, one thread
//! per connection) that reads every request body to the end, Content-Length
//! or chunked, throws the bytes away and answers
//! `201 {"received":N,"framing":"length"|"chunked"}` only after the last byte
//! arrived, so an upload's measured time covers the whole body and the
//! client can check that every byte got through. Keep-alive is honoured so
//! the proxies can pool connections to it.
//!
//! Build: `rustc -O -o sink bench/sink.rs`; run: `sink 127.0.0.1:PORT`.
//! It refuses a non-loopback address.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;

/// Read buffer: large, so a fast sender costs few syscalls here.
const BUF: usize = 1 << 20;
/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;

fn main() {
    let addr: SocketAddr = match std::env::args().nth(1).map(|a| a.parse()) {
        Some(Ok(a)) => a,
        _ => {
            eprintln!("usage: sink 127.0.0.1:PORT");
            std::process::exit(2);
        }
    };
    if !addr.ip().is_loopback() {
        eprintln!("sink: {addr} is not a loopback address");
        std::process::exit(2);
    }
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sink: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                thread::spawn(move || {
                    let _ = serve(s);
                });
            }
            Err(e) => eprintln!("sink: accept: {e}"),
        }
    }
}

fn serve(stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut r = BufReader::with_capacity(BUF, stream);
    loop {
        let Some(head) = read_head(&mut r)? else {
            return Ok(());
        };
        let (received, framing) = match head.body {
            Framing::Length(n) => (discard(&mut r, n)?, "length"),
            Framing::Chunked => (discard_chunked(&mut r)?, "chunked"),
        };
        let status = if head.method == "GET" || head.method == "HEAD" {
            "404 Not Found"
        } else {
            "201 Created"
        };
        let body = format!("{{\"received\":{received},\"framing\":\"{framing}\"}}\n");
        let conn = if head.close { "close" } else { "keep-alive" };
        write!(
            out,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {conn}\r\n\r\n{body}",
            body.len()
        )?;
        out.flush()?;
        if head.close {
            return Ok(());
        }
    }
}

enum Framing {
    Length(u64),
    Chunked,
}

struct Head {
    method: String,
    body: Framing,
    close: bool,
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// Reads one request head; `None` on a clean end of the connection.
fn read_head(r: &mut BufReader<TcpStream>) -> io::Result<Option<Head>> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line)?;
        if n == 0 {
            return if lines.is_empty() {
                Ok(None)
            } else {
                Err(bad("eof in head"))
            };
        }
        total += n;
        if total > MAX_HEAD {
            return Err(bad("head too large"));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            if lines.is_empty() {
                continue; // tolerate stray CRLF between requests
            }
            break;
        }
        lines.push(line);
    }
    let mut parts = lines[0].split(' ');
    let method = parts.next().unwrap_or("").to_owned();
    let version = lines[0].rsplit(' ').next().unwrap_or("");
    let mut close = version == "HTTP/1.0";
    let mut length = 0u64;
    let mut chunked = false;
    for line in &lines[1..] {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().map_err(|_| bad("content-length"))?,
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    close = true;
                } else if v.contains("keep-alive") {
                    close = false;
                }
            }
            _ => {}
        }
    }
    let body = if chunked {
        Framing::Chunked
    } else {
        Framing::Length(length)
    };
    Ok(Some(Head {
        method,
        body,
        close,
    }))
}

/// Discards exactly `n` bytes; returns how many were read.
fn discard(r: &mut BufReader<TcpStream>, n: u64) -> io::Result<u64> {
    let mut left = n;
    while left > 0 {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Err(bad("eof in body"));
        }
        let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        r.consume(take);
        left -= take as u64;
    }
    Ok(n)
}

/// Discards a chunked body with its trailers; returns the data bytes.
fn discard_chunked(r: &mut BufReader<TcpStream>) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("eof in chunk size"));
        }
        let size = line.trim_end_matches(['\r', '\n']);
        let size = size.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size, 16).map_err(|_| bad("chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut t = String::new();
                if r.read_line(&mut t)? == 0 || t == "\r\n" || t == "\n" {
                    return Ok(total);
                }
            }
        }
        total += discard(r, size)?;
        let mut crlf = String::new();
        r.read_line(&mut crlf)?;
    }
}
