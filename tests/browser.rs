//! The HTML report in a real browser: rush_hour's `report.html` opened by headless Chromium,
//! driven over the DevTools protocol, checked for console errors, for every chart, and for
//! charts that are drawn (the screenshot's pixels inside each chart's box are not all one
//! colour).
//!
//! Chromium is the one named by `CHROMIUM`, or `chromium` / `chromium-browser` on the PATH
//! (Debian: `apt-get install -y chromium`). The test is marked `#[ignore = "needs chromium"]`:
//! a plain `cargo test` lists it as ignored, never as passed; `.ci/run` installs Chromium and runs
//! it with `--include-ignored`, and there a missing browser fails it loudly.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use simulator::RunOptions;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// The charts every report holds (`data-chart` of each `figure`).
const CHARTS: [&str; 5] = ["mobility", "zone-speed", "alerts", "throughput", "latency"];
/// How long the browser may stay silent before the test fails.
const SILENCE: Duration = Duration::from_secs(60);
/// Width of the page, CSS pixels.
const PAGE_WIDTH: u64 = 1100;

/// The browser binary: `CHROMIUM`, else the first of `chromium`, `chromium-browser` on the PATH.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "no Chromium found: install it (Debian: `apt-get install -y chromium`) or set CHROMIUM \
         to its path"
    );
}

/// A headless Chromium of the test's own, killed when dropped.
struct Browser {
    child: Child,
    devtools_url: String,
}

impl Browser {
    fn start(profile: &Path) -> Browser {
        let binary = chromium();
        let mut child = Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        // Chromium says where DevTools listen on stderr; the rest of stderr is drained so the
        // browser never blocks on a full pipe.
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let mut browser = Browser {
            child,
            devtools_url: String::new(),
        };
        browser.devtools_url = rx.recv_timeout(SILENCE).unwrap_or_else(|_| {
            panic!(
                "{} did not say where DevTools listen within {} s",
                binary.display(),
                SILENCE.as_secs()
            )
        });
        browser
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A DevTools session over one websocket: commands to the page's session, and the events seen
/// while waiting for their answers.
struct DevTools {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    session: Option<String>,
    /// Console errors, error log entries and uncaught exceptions, in words.
    errors: Vec<String>,
    loaded: bool,
}

impl DevTools {
    fn connect(url: &str) -> DevTools {
        let (ws, _) = tungstenite::connect(url)
            .unwrap_or_else(|e| panic!("cannot open the DevTools websocket {url}: {e}"));
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(SILENCE))
                .expect("a read timeout can be set");
        }
        DevTools {
            ws,
            next_id: 0,
            session: None,
            errors: Vec::new(),
            loaded: false,
        }
    }

    /// Sends a command and returns its result; an error answer fails the test.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = &self.session {
            message["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(message.to_string()))
            .unwrap_or_else(|e| panic!("cannot send {method}: {e}"));
        loop {
            let m = self.read();
            if m["id"].as_u64() == Some(id) {
                if let Some(e) = m.get("error") {
                    panic!("{method} failed: {e}");
                }
                return m["result"].clone();
            }
        }
    }

    /// The next message, noting the events the test checks.
    fn read(&mut self) -> Value {
        loop {
            let m = self
                .ws
                .read()
                .unwrap_or_else(|e| panic!("the DevTools connection failed: {e}"));
            if !m.is_text() {
                continue;
            }
            let v: Value = serde_json::from_str(m.to_text().unwrap_or_default())
                .unwrap_or_else(|e| panic!("DevTools sent something not JSON: {e}"));
            self.note(&v);
            return v;
        }
    }

    fn note(&mut self, v: &Value) {
        let p = &v["params"];
        match v["method"].as_str() {
            Some("Runtime.consoleAPICalled") if p["type"] == "error" => {
                self.errors.push(format!("console.error: {}", p["args"]));
            }
            Some("Log.entryAdded") if p["entry"]["level"] == "error" => {
                self.errors.push(format!(
                    "log: {} ({})",
                    p["entry"]["text"], p["entry"]["url"]
                ));
            }
            Some("Runtime.exceptionThrown") => {
                self.errors
                    .push(format!("exception: {}", p["exceptionDetails"]));
            }
            Some("Page.loadEventFired") => self.loaded = true,
            _ => {}
        }
    }

    fn wait_loaded(&mut self) {
        while !self.loaded {
            self.read();
        }
    }

    /// Evaluates an expression that returns a JSON string, and parses it.
    fn evaluate_json(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating `{expression}` threw: {e}");
        }
        let text = r["result"]["value"].as_str().unwrap_or_default();
        serde_json::from_str(text).unwrap_or_else(|e| panic!("`{expression}` gave {text}: {e}"))
    }
}

/// Each chart's SVG box in page pixels, and the page's height.
const LAYOUT: &str = "JSON.stringify({
  height: document.documentElement.scrollHeight,
  charts: Array.from(document.querySelectorAll('figure[data-chart]')).map(f => {
    const s = f.querySelector('svg');
    const r = s ? s.getBoundingClientRect() : { left: 0, top: 0, width: 0, height: 0 };
    return { id: f.dataset.chart, x: r.left + window.scrollX, y: r.top + window.scrollY,
             w: r.width, h: r.height };
  })
})";

/// A decoded screenshot: RGBA rows.
struct Picture {
    width: usize,
    height: usize,
    rgba: Vec<u8>,
}

impl Picture {
    fn decode(png_bytes: &[u8]) -> Picture {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        decoder.set_transformations(png::Transformations::EXPAND);
        let mut reader = decoder.read_info().expect("the screenshot is a PNG");
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).expect("the PNG decodes");
        let channels = info.color_type.samples();
        let (width, height) = (info.width as usize, info.height as usize);
        let mut rgba = Vec::with_capacity(width * height * 4);
        for px in buf[..info.buffer_size()].chunks_exact(channels) {
            match channels {
                4 => rgba.extend_from_slice(px),
                3 => rgba.extend_from_slice(&[px[0], px[1], px[2], 255]),
                2 => rgba.extend_from_slice(&[px[0], px[0], px[0], px[1]]),
                _ => rgba.extend_from_slice(&[px[0], px[0], px[0], 255]),
            }
        }
        Picture {
            width,
            height,
            rgba,
        }
    }

    /// The share of pixels in a box that differ from its most common colour (0 when it is all
    /// one colour), the box clipped to the picture.
    fn drawn_share(&self, x: f64, y: f64, w: f64, h: f64) -> f64 {
        let x0 = (x.max(0.0) as usize).min(self.width);
        let y0 = (y.max(0.0) as usize).min(self.height);
        let x1 = ((x + w) as usize).min(self.width);
        let y1 = ((y + h) as usize).min(self.height);
        let mut counts: std::collections::BTreeMap<[u8; 4], u64> = Default::default();
        for row in y0..y1 {
            for col in x0..x1 {
                let i = (row * self.width + col) * 4;
                let mut px = [0; 4];
                px.copy_from_slice(&self.rgba[i..i + 4]);
                *counts.entry(px).or_default() += 1;
            }
        }
        let total: u64 = counts.values().sum();
        let top = counts.values().copied().max().unwrap_or(0);
        if total == 0 {
            0.0
        } else {
            (total - top) as f64 / total as f64
        }
    }
}

// Proves rush_hour's report opens in Chromium without a console error, holds every chart, and
// that each chart is drawn: at least 1 % of its box differs from the box's background.
#[test]
#[ignore = "needs chromium"]
fn report_renders_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("smart-city-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary folder");

    let scenario = root.join("scenarios/rush_hour.toml");
    let report = simulator::run_file(&scenario, &RunOptions::default())
        .unwrap_or_else(|e| panic!("rush_hour did not run: {e}"));
    let page = simulator::report::html::render(&report).expect("the report renders");
    // The SVG namespace is a name, not an address the page fetches.
    let addresses = page.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(
        !addresses.contains("http://")
            && !addresses.contains("https://")
            && !page.contains("<script"),
        "the report must not fetch or run anything"
    );
    let html = dir.join("report.html");
    std::fs::write(&html, &page).expect("report.html written");

    let browser = Browser::start(&dir.join("profile"));
    let mut dt = DevTools::connect(&browser.devtools_url);
    let target = dt.call("Target.createTarget", json!({ "url": "about:blank" }));
    let attached = dt.call(
        "Target.attachToTarget",
        json!({ "targetId": target["targetId"], "flatten": true }),
    );
    dt.session = attached["sessionId"].as_str().map(str::to_owned);
    assert!(dt.session.is_some(), "no DevTools session: {attached}");
    for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
        dt.call(domain, json!({}));
    }
    let metrics = |height: u64| json!({ "width": PAGE_WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": false });
    dt.call("Emulation.setDeviceMetricsOverride", metrics(1000));
    let url = format!("file://{}", html.display());
    dt.call("Page.navigate", json!({ "url": url }));
    dt.wait_loaded();

    // The whole page in one screenshot: the viewport as tall as the page.
    let height = dt.evaluate_json(LAYOUT)["height"].as_u64().unwrap_or(1000);
    dt.call("Emulation.setDeviceMetricsOverride", metrics(height));
    let layout = dt.evaluate_json(LAYOUT);
    let shot = dt.call("Page.captureScreenshot", json!({ "format": "png" }));
    let png_bytes = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap_or_default())
        .expect("the screenshot is base64");
    let screenshot = dir.join("report.png");
    std::fs::write(&screenshot, &png_bytes).expect("screenshot written");
    let picture = Picture::decode(&png_bytes);
    drop(browser);
    let _ = std::fs::remove_dir_all(dir.join("profile"));

    let found = layout["charts"].as_array().cloned().unwrap_or_default();
    let mut problems = dt.errors.clone();
    for id in CHARTS {
        let Some(c) = found.iter().find(|c| c["id"] == id) else {
            problems.push(format!("chart {id} is missing"));
            continue;
        };
        let f = |k: &str| c[k].as_f64().unwrap_or(0.0);
        if f("w") < 100.0 || f("h") < 100.0 {
            problems.push(format!("chart {id} is {}x{} px", f("w"), f("h")));
            continue;
        }
        let share = picture.drawn_share(f("x"), f("y"), f("w"), f("h"));
        if share < 0.01 {
            problems.push(format!(
                "chart {id} is blank: {:.3} % of its box differs from its background",
                share * 100.0
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "the report in Chromium: {problems:#?}\n(report and screenshot kept in {})",
        dir.display()
    );
    eprintln!(
        "report {} ({} KB) rendered in Chromium; screenshot {}",
        html.display(),
        page.len().div_ceil(1024),
        screenshot.display()
    );
}
