//! Socket.IO sessions held over HTTP long-polling, for `idle --polling`: the Engine.IO
//! handshake, the namespace connect, one event and its reply, then a poll always waiting, as
//! `socket.io-client` keeps one.

use anyhow::{Context, bail};

/// One long-polling session.
pub(crate) struct Session {
    http: reqwest::Client,
    url: String,
}

impl Session {
    /// Opens a session at `url` (`http://…/socket.io/?EIO=4&transport=polling`), connects the
    /// root namespace with `auth` and, unless `hello` is empty, sends it as an event and waits
    /// for its answer.
    pub(crate) async fn open(
        http: reqwest::Client,
        url: &str,
        auth: &str,
        hello: &str,
    ) -> anyhow::Result<Self> {
        let open = http.get(url).send().await.context("handshake")?.text().await?;
        let open: serde_json::Value =
            serde_json::from_str(open.strip_prefix('0').context("not an open packet")?)?;
        let sid = open["sid"].as_str().context("no sid")?;
        let session = Self { http, url: format!("{url}&sid={sid}") };
        session.post(format!("40{auth}")).await?;
        let connected = session.until(|p| p.starts_with("40") || p.starts_with("44")).await?;
        if connected.starts_with("44") {
            bail!("namespace connect refused: {connected}");
        }
        if !hello.is_empty() {
            session.post(format!("42{hello}")).await?;
            session.until(|p| p.starts_with("42") || p.starts_with("43")).await?;
        }
        Ok(session)
    }

    async fn post(&self, body: String) -> anyhow::Result<()> {
        let response = self.http.post(&self.url).body(body).send().await.context("post")?;
        if !response.status().is_success() {
            bail!("post answered {}", response.status());
        }
        Ok(())
    }

    /// One poll's packets; pings answered.
    async fn poll(&self) -> anyhow::Result<Vec<String>> {
        let response = self.http.get(&self.url).send().await.context("poll")?;
        if !response.status().is_success() {
            bail!("poll answered {}", response.status());
        }
        let body = response.text().await?;
        let packets: Vec<String> = body.split('\u{1e}').map(str::to_owned).collect();
        if packets.iter().any(|p| p == "2") {
            self.post("3".to_owned()).await?;
        }
        Ok(packets)
    }

    /// Polls until a packet that `wanted` accepts.
    async fn until(&self, wanted: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        loop {
            if let Some(packet) = self.poll().await?.into_iter().find(|p| wanted(p)) {
                return Ok(packet);
            }
        }
    }

    /// Keeps a poll waiting until `stop`; an error when the session is lost.
    pub(crate) async fn hold(
        self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                polled = self.poll() => {
                    let packets = polled?;
                    if packets.iter().any(|p| p == "1") {
                        bail!("the server closed the session");
                    }
                }
            }
        }
        // The client's close, as `socket.close()` sends it.
        let _ = self.post("1".to_owned()).await;
        Ok(())
    }
}
