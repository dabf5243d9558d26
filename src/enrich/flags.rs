//! Bot and test traffic: rules that flag a hit (it is still landed, only flagged), each with a
//! reason name that goes into `traffic_flags`.
//!
//! - `crawler_ua`: the user agent is a crawler (uap-core's spider list, or a `spider`,
//!   `crawler`, `…bot/`, `(+http…)` marker);
//! - `http_tool_ua`: the user agent is an HTTP library or command-line tool (`curl/`,
//!   `python-requests`, `Go-http-client`, …), not a device;
//! - `headless_browser`: an automated browser (`HeadlessChrome`, PhantomJS, Selenium, …);
//! - `no_user_agent`: a device call (not server-to-server) whose user agent is empty;
//! - `media_test`: a media joint-test call (联调): the click id or callback starts with `atest`
//!   (Xiaohongshu, `spec/media-protocols.md` §5.4, example 14);
//! - `template_probe`: every mapped parameter is an unreplaced macro, as when a media checks a
//!   link template (example 11).
//!
//! `is_bot` is any of the first three; `is_test` any of the last two. `no_user_agent` alone sets
//! neither: some app SDKs fire impression pings without an agent.

/// Lower-case markers of crawlers (beyond uap-core's list).
const CRAWLER_MARKERS: [&str; 8] = [
    "spider", "crawler", "crawl/", "bot/", "bot;", "bot)", "robot", "(+http",
];
/// Lower-case markers of HTTP libraries and tools.
const TOOL_MARKERS: [&str; 16] = [
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp/",
    "go-http-client",
    "java/",
    "libwww-perl",
    "apache-httpclient",
    "postmanruntime",
    "insomnia/",
    "httpie/",
    "node-fetch",
    "axios/",
    "scrapy",
];
/// Lower-case markers of automated browsers.
const HEADLESS_MARKERS: [&str; 6] = [
    "headlesschrome",
    "phantomjs",
    "selenium",
    "webdriver",
    "puppeteer",
    "playwright",
];
/// Phone brands whose names contain a crawler marker.
const BRAND_EXCEPTIONS: [&str; 1] = ["cubot"];

/// What the rules look at.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlagInput<'a> {
    /// The user's agent (`user_agent` column).
    pub user_agent: Option<&'a str>,
    /// uap-core says the agent is a spider.
    pub spider: bool,
    /// The media's server made the call.
    pub server_to_server: bool,
    /// The click id and callback as sent.
    pub click_id: Option<&'a str>,
    pub callback: Option<&'a str>,
    /// Every mapped parameter was an unreplaced macro.
    pub template_probe: bool,
}

/// The flags of one hit, in a fixed order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrafficFlags {
    pub reasons: Vec<&'static str>,
}

impl TrafficFlags {
    pub fn is_bot(&self) -> bool {
        self.reasons
            .iter()
            .any(|r| matches!(*r, "crawler_ua" | "http_tool_ua" | "headless_browser"))
    }

    pub fn is_test(&self) -> bool {
        self.reasons
            .iter()
            .any(|r| matches!(*r, "media_test" | "template_probe"))
    }

    /// `crawler_ua,no_user_agent`, or `None` when unflagged.
    pub fn joined(&self) -> Option<String> {
        (!self.reasons.is_empty()).then(|| self.reasons.join(","))
    }
}

/// Applies every rule.
pub fn flags(input: &FlagInput<'_>) -> TrafficFlags {
    let mut reasons = Vec::new();
    let agent = input
        .user_agent
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            // Markers sit near the start; bound the work on 10 KB agents.
            let mut end = a.len().min(super::ua::MAX_PARSED_BYTES);
            while !a.is_char_boundary(end) {
                end -= 1;
            }
            a[..end].to_ascii_lowercase()
        });
    if let Some(agent) = &agent {
        let has = |markers: &[&str]| markers.iter().any(|m| agent.contains(m));
        let brand = BRAND_EXCEPTIONS.iter().any(|b| agent.contains(b));
        if input.spider || (has(&CRAWLER_MARKERS) && !brand) {
            reasons.push("crawler_ua");
        }
        if has(&TOOL_MARKERS) {
            reasons.push("http_tool_ua");
        }
        if has(&HEADLESS_MARKERS) {
            reasons.push("headless_browser");
        }
    } else if !input.server_to_server {
        reasons.push("no_user_agent");
    }
    let test_value = |v: Option<&str>| v.is_some_and(|v| v.trim_start().starts_with("atest"));
    if test_value(input.click_id) || test_value(input.callback) {
        reasons.push("media_test");
    }
    if input.template_probe {
        reasons.push("template_probe");
    }
    TrafficFlags { reasons }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_agent(agent: &str) -> TrafficFlags {
        flags(&FlagInput {
            user_agent: Some(agent),
            ..FlagInput::default()
        })
    }

    #[test]
    fn devices_are_not_flagged() {
        for agent in [
            "Mozilla/5.0 (Linux; Android 12; V2055A Build/SP1A.210812.003; wv) MicroMessenger/8.0",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 16_5 like Mac OS X) AppleWebKit/605.1.15",
            "Dalvik/2.1.0 (Linux; U; Android 13; PGT-AN10)",
            "okhttp/4.9.3",
            "Mozilla/5.0 (Linux; Android 9; CUBOT KINGKONG 5 Build/PPR1.180610.011)",
        ] {
            assert_eq!(with_agent(agent), TrafficFlags::default(), "{agent}");
        }
    }

    #[test]
    fn crawlers_tools_and_headless_browsers_are_bots() {
        let cases = [
            (
                "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
                "crawler_ua",
            ),
            (
                "Sogou web spider/4.0(+http://www.sogou.com/docs/help/webmasters.htm#07)",
                "crawler_ua",
            ),
            ("curl/8.5.0", "http_tool_ua"),
            ("python-requests/2.31.0", "http_tool_ua"),
            ("Go-http-client/1.1", "http_tool_ua"),
            (
                "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/120.0.0.0 Safari/537.36",
                "headless_browser",
            ),
        ];
        for (agent, reason) in cases {
            let f = with_agent(agent);
            assert!(f.reasons.contains(&reason), "{agent}: {f:?}");
            assert!(f.is_bot() && !f.is_test(), "{agent}");
        }
        let spider = flags(&FlagInput {
            user_agent: Some("Mozilla/5.0 (compatible; Foo)"),
            spider: true,
            ..FlagInput::default()
        });
        assert_eq!(spider.joined().as_deref(), Some("crawler_ua"));
    }

    #[test]
    fn an_empty_agent_is_flagged_on_device_calls_only() {
        let device = flags(&FlagInput {
            user_agent: Some("  "),
            ..FlagInput::default()
        });
        assert_eq!(device.joined().as_deref(), Some("no_user_agent"));
        assert!(!device.is_bot() && !device.is_test());
        let server = flags(&FlagInput {
            server_to_server: true,
            ..FlagInput::default()
        });
        assert_eq!(server.joined(), None);
    }

    #[test]
    fn joint_tests_and_template_probes_are_tests() {
        let test = flags(&FlagInput {
            user_agent: Some("Mozilla/5.0"),
            click_id: Some("atestMdo9fK5B62TSkrqg3fE082PYcu24bE"),
            ..FlagInput::default()
        });
        assert_eq!(test.joined().as_deref(), Some("media_test"));
        assert!(test.is_test() && !test.is_bot());
        let probe = flags(&FlagInput {
            server_to_server: true,
            template_probe: true,
            ..FlagInput::default()
        });
        assert_eq!(probe.joined().as_deref(), Some("template_probe"));
        assert!(probe.is_test());
    }

    #[test]
    fn huge_and_multibyte_agents_are_safe() {
        let agent = format!("{}curl/8", "中".repeat(5000));
        assert_eq!(with_agent(&agent), TrafficFlags::default());
    }
}
