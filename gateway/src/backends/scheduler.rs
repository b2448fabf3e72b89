//! Gateway → scheduler control: the preload's `POST /api/comm`, which takes
//! `scale` and `adapt` orders authenticated by the cluster's token.

use std::time::Duration;

use serde_json::Value;

#[derive(Clone)]
pub struct SchedulerControl {
    http: reqwest::Client,
}

impl Default for SchedulerControl {
    fn default() -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a plain HTTP client builds");
        Self { http }
    }
}

impl SchedulerControl {
    /// Sends one order, three attempts with backoff from 0.1 s (as the
    /// Python gateway does); the error says why the last one failed.
    pub async fn send(&self, api_address: &str, token: &str, order: &Value) -> Result<(), String> {
        let url = format!("{}/api/comm", api_address.trim_end_matches('/'));
        let mut delay = Duration::from_millis(100);
        let mut last = String::new();
        for attempt in 1..=3 {
            let sent = self
                .http
                .post(&url)
                .header("Authorization", format!("token {token}"))
                .json(order)
                .send()
                .await;
            match sent.and_then(|r| r.error_for_status()) {
                Ok(_) => return Ok(()),
                Err(e) => last = e.without_url().to_string(),
            }
            if attempt < 3 {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        Err(format!("the scheduler's API at {url} did not answer: {last}"))
    }
}
