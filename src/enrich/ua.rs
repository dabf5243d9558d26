//! User agent → operating system, version, device brand and model, with the ua-parser project's
//! regexes (`uap_regexes.yaml`, vendored from uap-core) read by the `ua-parser` crate, plus the
//! one thing uap-core does not know yet: HarmonyOS. Parsed agents are cached (bounded LRU):
//! media send the same few thousand agents millions of times a day.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, OnceLock};

use lru::LruCache;
use serde::Deserialize;
use tracing::error;

/// The regexes, embedded so that the binary needs no data file.
const UAP_REGEXES: &str = include_str!("uap_regexes.yaml");

/// Only this many leading bytes of an agent are parsed (and used as the cache key): the OS and
/// device are always near the start, and the regex work stays bounded for 10 KB agents.
pub const MAX_PARSED_BYTES: usize = 2048;

/// How many distinct agents the cache keeps.
pub const CACHE_ENTRIES: usize = 16 * 1024;

/// What an agent says about the device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UaInfo {
    /// `Android`, `iOS`, `HarmonyOS`, `Windows`, `Mac OS X`, … (uap-core families).
    pub os: Option<String>,
    /// `12`, `16.5`, `10.0.1`: the version parts the agent gave.
    pub os_version: Option<String>,
    /// Device brand when the regexes know it (`Apple`, `Huawei`, `vivo`, …).
    pub brand: Option<String>,
    /// Device model (`iPhone`, `V2055A`, `NOH-AN00`, …).
    pub model: Option<String>,
    /// The regexes classify the agent as a crawler (device family `Spider`).
    pub spider: bool,
}

/// The subset of uap-core's `regexes.yaml` this module uses (browser parsers are skipped).
#[derive(Deserialize)]
struct OsAndDevice {
    os_parsers: Vec<ua_parser::os::Parser<'static>>,
    device_parsers: Vec<ua_parser::device::Parser<'static>>,
}

/// The compiled regexes.
struct Compiled {
    os: ua_parser::os::Extractor<'static>,
    device: ua_parser::device::Extractor<'static>,
}

/// Compiles a uap-core `regexes.yaml` text.
fn compile(text: &str) -> Result<Compiled, String> {
    let regexes: OsAndDevice =
        serde_saphyr::from_str_with_options(text, serde_saphyr::options! { budget: None })
            .map_err(|e| format!("user agent regexes: {e}"))?;
    let os = ua_parser::os::Builder::new()
        .push_all(regexes.os_parsers)
        .map_err(|e| format!("user agent OS regexes: {e:?}"))?
        .build()
        .map_err(|e| format!("user agent OS regexes: {e:?}"))?;
    let device = ua_parser::device::Builder::new()
        .push_all(regexes.device_parsers)
        .map_err(|e| format!("user agent device regexes: {e:?}"))?
        .build()
        .map_err(|e| format!("user agent device regexes: {e:?}"))?;
    Ok(Compiled { os, device })
}

/// The regexes (compiled on first use: ~0.1 s in a release build, ~2 s in a debug build, which
/// only the processes that decode hits should pay) and the cache; cheap to share behind an `Arc`.
pub struct UaParser {
    text: &'static str,
    compiled: OnceLock<Result<Compiled, String>>,
    cache: Mutex<LruCache<Box<str>, Arc<UaInfo>>>,
}

impl std::fmt::Debug for UaParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UaParser").finish_non_exhaustive()
    }
}

impl UaParser {
    /// The parser of the embedded regexes.
    pub fn embedded() -> Self {
        let entries = NonZeroUsize::new(CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN);
        Self {
            text: UAP_REGEXES,
            compiled: OnceLock::new(),
            cache: Mutex::new(LruCache::new(entries)),
        }
    }

    /// Compiles the regexes now (else the first parse does); an error means the embedded
    /// regexes are broken, which the unit tests rule out.
    pub fn warm(&self) -> Result<(), String> {
        self.compiled().map(|_| ())
    }

    fn compiled(&self) -> Result<&Compiled, String> {
        self.compiled
            .get_or_init(|| {
                let compiled = compile(self.text);
                if let Err(e) = &compiled {
                    error!(error = %e, "user agent regexes do not compile: ua_* columns stay null");
                }
                compiled
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Parses an agent, from the cache when it was seen recently.
    pub fn parse(&self, agent: &str) -> Arc<UaInfo> {
        let agent = bounded(agent.trim());
        // A poisoned lock only means another thread panicked mid-update: the cache is still a
        // valid cache (every entry is a finished parse).
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(agent)
            .cloned();
        if let Some(info) = cached {
            return info;
        }
        let info = Arc::new(self.parse_uncached(agent));
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .put(agent.into(), Arc::clone(&info));
        info
    }

    /// Parses an agent without the cache (the benchmark's baseline).
    pub fn parse_uncached(&self, agent: &str) -> UaInfo {
        let agent = bounded(agent);
        if agent.is_empty() {
            return UaInfo::default();
        }
        let Ok(compiled) = self.compiled() else {
            return UaInfo::default();
        };
        let mut info = UaInfo::default();
        if let Some(os) = compiled.os.extract(agent) {
            let family = os.os.trim();
            if !family.is_empty() && family != "Other" {
                info.os = Some(family.to_string());
                let parts: Vec<&str> = [&os.major, &os.minor, &os.patch, &os.patch_minor]
                    .into_iter()
                    .map_while(|p| p.as_deref().map(str::trim).filter(|p| !p.is_empty()))
                    .collect();
                info.os_version = (!parts.is_empty()).then(|| parts.join("."));
            }
        }
        if let Some(harmony) = harmony_os(agent) {
            info.os = Some("HarmonyOS".to_string());
            info.os_version = harmony;
        }
        if let Some(device) = compiled.device.extract(agent) {
            if device.device == "Spider" {
                info.spider = true;
            } else if device.device != "Other" {
                let real = |v: Option<std::borrow::Cow<'_, str>>| {
                    v.map(|v| v.trim().to_string())
                        .filter(|v| !v.is_empty() && !v.starts_with("Generic"))
                };
                info.brand = real(device.brand);
                info.model = real(device.model);
            }
        }
        info
    }

    /// How many agents are cached now.
    pub fn cached(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

/// The first `MAX_PARSED_BYTES` of an agent, cut at a character boundary.
fn bounded(agent: &str) -> &str {
    if agent.len() <= MAX_PARSED_BYTES {
        return agent;
    }
    let mut end = MAX_PARSED_BYTES;
    while !agent.is_char_boundary(end) {
        end -= 1;
    }
    &agent[..end]
}

/// HarmonyOS agents: `HarmonyOS` (2–4, Android-compatible, often with no version of its own) or
/// `OpenHarmony 4.1` (HarmonyOS NEXT). `Some(version)` when the agent is HarmonyOS.
fn harmony_os(agent: &str) -> Option<Option<String>> {
    let version_after = |marker: &str| -> Option<Option<String>> {
        let at = agent.find(marker)?;
        let rest = agent[at + marker.len()..].trim_start_matches([' ', '/']);
        let version: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let version = version.trim_end_matches('.');
        Some((!version.is_empty()).then(|| version.to_string()))
    };
    version_after("OpenHarmony").or_else(|| version_after("HarmonyOS"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    pub(crate) fn parser() -> &'static UaParser {
        static PARSER: OnceLock<UaParser> = OnceLock::new();
        PARSER.get_or_init(|| {
            let parser = UaParser::embedded();
            parser.warm().unwrap_or_else(|e| panic!("{e}"));
            parser
        })
    }

    fn parse(agent: &str) -> UaInfo {
        parser().parse_uncached(agent)
    }

    #[test]
    fn a_vivo_webview_in_wechat() {
        let info = parse(
            "Mozilla/5.0 (Linux; Android 12; V2055A Build/SP1A.210812.003; wv) AppleWebKit/537.36 \
             (KHTML, like Gecko) Version/4.0 Chrome/86.0.4240.99 XWEB/4317 MMWEBSDK/20220903 \
             Mobile Safari/537.36 MMWEBID/6294 MicroMessenger/8.0.28.2240(0x28001C35) WeChat/arm64 \
             Weixin NetType/WIFI Language/zh_CN ABI/arm64",
        );
        assert_eq!(info.os.as_deref(), Some("Android"));
        assert_eq!(info.os_version.as_deref(), Some("12"));
        assert_eq!(info.model.as_deref(), Some("V2055A"));
        assert!(!info.spider);
    }

    #[test]
    fn an_iphone() {
        let info = parse(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 16_5 like Mac OS X) AppleWebKit/605.1.15 \
             (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.38(0x1800262c) NetType/4G",
        );
        assert_eq!(info.os.as_deref(), Some("iOS"));
        assert_eq!(info.os_version.as_deref(), Some("16.5"));
        assert_eq!(info.brand.as_deref(), Some("Apple"));
        assert_eq!(info.model.as_deref(), Some("iPhone"));
    }

    #[test]
    fn harmony_os_old_and_next() {
        let old = parse("Mozilla/5.0 (Linux; Android 12; HarmonyOS; NOH-AN00)");
        assert_eq!(old.os.as_deref(), Some("HarmonyOS"));
        assert_eq!(old.os_version, None);
        let next = parse(
            "Mozilla/5.0 (Phone; OpenHarmony 4.1) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/114.0.0.0 Safari/537.36 ArkWeb/4.1.6.1 Mobile HuaweiBrowser/5.0.4.300",
        );
        assert_eq!(next.os.as_deref(), Some("HarmonyOS"));
        assert_eq!(next.os_version.as_deref(), Some("4.1"));
    }

    #[test]
    fn a_dalvik_agent_and_a_desktop() {
        let dalvik = parse("Dalvik/2.1.0 (Linux; U; Android 13; PGT-AN10 Build/HUAWEIPGT-AN10)");
        assert_eq!(dalvik.os.as_deref(), Some("Android"));
        assert_eq!(dalvik.os_version.as_deref(), Some("13"));
        assert!(dalvik.model.is_some(), "{dalvik:?}");
        let windows = parse(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
             Chrome/120.0.0.0 Safari/537.36",
        );
        assert_eq!(windows.os.as_deref(), Some("Windows"));
    }

    #[test]
    fn crawlers_are_spiders() {
        assert!(parse("Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)").spider);
        assert!(
            parse("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")
                .spider
        );
    }

    #[test]
    fn empty_garbage_and_huge_agents_are_safe() {
        assert_eq!(parse(""), UaInfo::default());
        assert_eq!(parse("\u{0}\u{ffff}((((("), UaInfo::default());
        let huge = format!(
            "Mozilla/5.0 (Linux; Android 13; 22081212C) {}",
            "x".repeat(100_000)
        );
        assert_eq!(parse(&huge).os_version.as_deref(), Some("13"));
        let multibyte = "中".repeat(MAX_PARSED_BYTES);
        assert!(bounded(&multibyte).len() <= MAX_PARSED_BYTES);
    }

    #[test]
    fn the_cache_returns_the_same_answer_and_stays_bounded() {
        let parser = parser();
        let agent = "Mozilla/5.0 (Linux; Android 11; M2012K11AC)";
        let first = parser.parse(agent);
        let second = parser.parse(agent);
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(*first, parser.parse_uncached(agent));
        assert!(parser.cached() <= CACHE_ENTRIES);
    }
}
