//! A small blocking client of the admin API for the CLI: JSON in, JSON out, the API's
//! `{"error", "field"}` answers turned into one error line.

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::Value;

pub struct ApiClient {
    base: url::Url,
    token: String,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl ApiClient {
    pub fn new(base: &str, token: String) -> anyhow::Result<ApiClient> {
        let base = url::Url::parse(base).with_context(|| format!("--api `{base}`"))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            bail!("--api `{base}`: expected an http:// or https:// URL");
        }
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        Ok(ApiClient {
            base,
            token,
            client,
            rt,
        })
    }

    /// `{base}/api/v1/{segments…}`, each segment percent-encoded (workspace names may be
    /// Chinese or hold `/`).
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> anyhow::Result<url::Url> {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| anyhow::anyhow!("--api `{}` cannot carry a path", self.base))?;
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        Ok(url)
    }

    fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> anyhow::Result<Vec<u8>> {
        let url = self.url(segments, query)?;
        self.rt.block_on(async {
            let mut request = self
                .client
                .request(method.clone(), url.clone())
                .bearer_auth(&self.token);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request
                .send()
                .await
                .with_context(|| format!("{method} {url}"))?;
            let status = response.status();
            let bytes = response.bytes().await?.to_vec();
            if status.is_success() {
                return Ok(bytes);
            }
            Err(api_error(status, &bytes))
        })
    }

    fn json(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let bytes = self.send(method, segments, query, body)?;
        serde_json::from_slice(&bytes).context("the admin API answered something that is not JSON")
    }

    pub fn get(&self, segments: &[&str], query: &[(&str, String)]) -> anyhow::Result<Value> {
        self.json(Method::GET, segments, query, None)
    }

    pub fn get_bytes(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> anyhow::Result<Vec<u8>> {
        self.send(Method::GET, segments, query, None)
    }

    /// GETs a file and writes it to `path` as it arrives (via `{path}.part`, renamed when
    /// complete); returns the bytes written.
    pub fn download_to(&self, segments: &[&str], path: &std::path::Path) -> anyhow::Result<u64> {
        use std::io::Write as _;
        let url = self.url(segments, &[])?;
        self.rt.block_on(async {
            let mut response = self
                .client
                .get(url.clone())
                .bearer_auth(&self.token)
                .timeout(std::time::Duration::from_secs(3600))
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            let status = response.status();
            if !status.is_success() {
                let bytes = response.bytes().await.unwrap_or_default();
                return Err(api_error(status, &bytes));
            }
            let part = path.with_extension("part");
            let mut out = std::fs::File::create(&part)
                .with_context(|| format!("creating {}", part.display()))?;
            let mut written = 0u64;
            while let Some(chunk) = response
                .chunk()
                .await
                .with_context(|| format!("GET {url}"))?
            {
                out.write_all(&chunk)
                    .with_context(|| format!("writing {}", part.display()))?;
                written += chunk.len() as u64;
            }
            out.sync_all()?;
            std::fs::rename(&part, path)
                .with_context(|| format!("renaming {} to {}", part.display(), path.display()))?;
            Ok(written)
        })
    }

    pub fn post(&self, segments: &[&str], body: &Value) -> anyhow::Result<Value> {
        self.json(Method::POST, segments, &[], Some(body))
    }

    pub fn patch(&self, segments: &[&str], body: &Value) -> anyhow::Result<Value> {
        self.json(Method::PATCH, segments, &[], Some(body))
    }
}

/// The admin API's `{"error", "field"}` answer (or its raw text) as one error line.
fn api_error(status: reqwest::StatusCode, bytes: &[u8]) -> anyhow::Error {
    let answer: Option<Value> = serde_json::from_slice(bytes).ok();
    let message = answer
        .as_ref()
        .and_then(|v| v["error"].as_str())
        .map_or_else(
            || String::from_utf8_lossy(bytes).trim().to_string(),
            str::to_string,
        );
    match answer.as_ref().and_then(|v| v["field"].as_str()) {
        Some(field) if !message.starts_with(field) => {
            anyhow::anyhow!("{message} (field `{field}`; HTTP {})", status.as_u16())
        }
        _ => anyhow::anyhow!("{message} (HTTP {})", status.as_u16()),
    }
}
