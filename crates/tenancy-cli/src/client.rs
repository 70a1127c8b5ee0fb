//! A plain-HTTP client of a running `tenancy serve`, for the commands that read from it
//! (`tenancy top`, `tenancy report`).

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use secrecy::{ExposeSecret, SecretString};

/// The `host:port` of an `http://host:port` address given as `--url`.
pub(crate) fn authority(url: &str, command: &str) -> anyhow::Result<String> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!(
            "--url {url:?}: use an http:// address ({command} speaks plain HTTP; reach a remote server through a tunnel)"
        );
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        bail!("--url {url:?}: give only http://host:port");
    }
    Ok(authority.to_owned())
}

/// GETs `path` from the server at `authority` with an admin token; the body of a 2xx
/// answer, else an error with the problem's detail.
pub(crate) async fn get(
    authority: &str,
    path: &str,
    token: &SecretString,
) -> anyhow::Result<Bytes> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("starting HTTP")?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(
            hyper::header::AUTHORIZATION,
            format!("Bearer {}", token.expose_secret()),
        )
        .body(Empty::<Bytes>::new())
        .context("building the request")?;
    let what = path.split('?').next().unwrap_or(path);
    let res = sender
        .send_request(req)
        .await
        .with_context(|| format!("asking for {what}"))?;
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .context("reading the answer")?
        .to_bytes();
    if !status.is_success() {
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
            .unwrap_or_default();
        bail!("the server answered {status}: {detail}");
    }
    Ok(body)
}
