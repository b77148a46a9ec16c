//! Misbehaving servers in front of a test registry, for the retry, resume and redirect tests.

use base64::Engine as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A TCP proxy in front of the registry that misbehaves once: it answers the first manifest
/// request with 503, and cuts the first response for blob `cut_digest` after `cut_after`
/// bytes.
pub(crate) fn faulty_proxy(upstream: String, cut_digest: String, cut_after: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let failed_manifest = Arc::new(AtomicUsize::new(0));
    let cut = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let server = TcpStream::connect(&upstream).unwrap();
            let (failed_manifest, cut, needle) =
                (failed_manifest.clone(), cut.clone(), cut_digest.clone());
            let armed = Arc::new(AtomicUsize::new(0));
            let (mut c_in, mut s_out, armed_w) = (
                client.try_clone().unwrap(),
                server.try_clone().unwrap(),
                armed.clone(),
            );
            let mut c_reply = client.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while let Ok(n @ 1..) = c_in.read(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    if text.contains("/manifests/")
                        && failed_manifest.fetch_add(1, Ordering::SeqCst) == 0
                    {
                        let _ = c_reply.write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
                        );
                        continue;
                    }
                    if text.contains(&needle) && cut.fetch_add(1, Ordering::SeqCst) == 0 {
                        armed_w.store(1, Ordering::SeqCst);
                    }
                    if s_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s_out.shutdown(Shutdown::Both);
            });
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 16384];
                let mut sent_armed = 0;
                while let Ok(n @ 1..) = s_in.read(&mut buf) {
                    if armed.load(Ordering::SeqCst) == 1 {
                        sent_armed += n;
                        if sent_armed > cut_after {
                            break;
                        }
                    }
                    if c_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = c_out.shutdown(Shutdown::Both);
                let _ = s_in.shutdown(Shutdown::Both);
            });
        }
    });
    addr
}

/// A server that answers every request with a 307 to the same path on `upstream`, as
/// registries do to send blob downloads to a CDN.
pub(crate) fn redirector(upstream: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut client in listener.incoming().map_while(Result::ok) {
            let mut request_line = String::new();
            let mut reader = BufReader::new(client.try_clone().unwrap());
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            // Read the headers so closing the socket does not reset the connection.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request_line.split(' ').nth(1).unwrap_or("/");
            let reply = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{upstream}{path}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = client.write_all(reply.as_bytes());
            let _ = client.shutdown(Shutdown::Both);
        }
    });
    addr
}

/// A front that demands bearer tokens, as Docker Hub does: a request without the token gets
/// 401 with a `WWW-Authenticate: Bearer realm=…,service=test` challenge; `/token` hands the
/// token out (only to `creds`, `user:password`, when given); requests with it go to
/// `upstream`. Every token request's query is recorded.
pub(crate) struct TokenFront {
    pub addr: String,
    pub token_queries: Arc<Mutex<Vec<String>>>,
}

const TOKEN: &str = "t0k3n";

pub(crate) fn token_front(upstream: String, creds: Option<&str>) -> TokenFront {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let token_queries = Arc::new(Mutex::new(Vec::new()));
    let queries = token_queries.clone();
    let basic = creds.map(|c| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(c)
        )
    });
    let realm = format!("http://{addr}/token");
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let (upstream, queries, basic, realm) = (
                upstream.clone(),
                queries.clone(),
                basic.clone(),
                realm.clone(),
            );
            std::thread::spawn(move || {
                serve_token_front(client, &upstream, &queries, basic, &realm)
            });
        }
    });
    TokenFront {
        addr,
        token_queries,
    }
}

/// Answers one request (every response closes the connection).
fn serve_token_front(
    mut client: TcpStream,
    upstream: &str,
    queries: &Mutex<Vec<String>>,
    basic: Option<String>,
    realm: &str,
) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut headers = Vec::new();
    let mut authorization = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) <= 2 {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((&line, ""));
        match name.to_ascii_lowercase().as_str() {
            "authorization" => authorization = value.trim().to_string(),
            "connection" => {}
            _ => headers.push(line.clone()),
        }
    }
    let path = request_line.split(' ').nth(1).unwrap_or("/").to_string();
    let reply = |status: &str, extra: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let response = if let Some(query) = path.strip_prefix("/token?") {
        queries.lock().unwrap().push(query.to_string());
        if basic.as_ref().is_some_and(|b| *b != authorization) {
            reply(
                "401 Unauthorized",
                "",
                r#"{"details":"incorrect username or password"}"#,
            )
        } else {
            reply(
                "200 OK",
                "",
                &format!(r#"{{"token":"{TOKEN}","expires_in":300}}"#),
            )
        }
    } else if authorization == format!("Bearer {TOKEN}") {
        let mut server = TcpStream::connect(upstream).unwrap();
        let head = format!(
            "{request_line}{}Connection: close\r\n\r\n",
            headers.concat()
        );
        server.write_all(head.as_bytes()).unwrap();
        let _ = std::io::copy(&mut server, &mut client);
        let _ = client.shutdown(Shutdown::Both);
        return;
    } else {
        let challenge = format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"test\"\r\n");
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
        reply("401 Unauthorized", &challenge, body)
    };
    let _ = client.write_all(response.as_bytes());
    let _ = client.shutdown(Shutdown::Both);
}
