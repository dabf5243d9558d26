//! What a link id leads to, kept in memory for the request path and refreshed from the catalog;
//! and minting the copy-paste URLs of an activity.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::catalog::{Activity, ActivityStatus, Catalog, CatalogError};
use crate::collect::landing::LandingTemplate;
use crate::collect::link::{Endpoint, LinkSigner};
use crate::collect::registry::{
    ClickAnswer, ImpressionAnswer, LinkKind, MediaRegistry, Protocol, ThirdPartyMode,
};

/// How to answer a hit on one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Gif,
    NoContent,
    /// `302` to the activity's landing URL (`204` without one).
    Redirect,
    Body {
        status: u16,
        content_type: String,
        body: String,
    },
}

/// Everything the request path needs about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkTarget {
    pub activity_id: i64,
    pub workspace: String,
    pub channel: String,
    pub template: Option<String>,
    pub status: ActivityStatus,
    pub endpoint: Endpoint,
    pub landing_url: Option<String>,
    /// The landing URL's macros, when it has any (device clicks only): filled per click.
    pub landing_template: Option<LandingTemplate>,
    pub answer: Answer,
}

impl LinkTarget {
    /// Where a click with this raw query string redirects: the landing URL, its macros (if
    /// any) filled from the click. Only ever the activity's own landing URL.
    pub fn landing_for(&self, query: &str) -> Option<std::borrow::Cow<'_, str>> {
        let url = self.landing_url.as_deref()?;
        Some(match &self.landing_template {
            Some(template) => std::borrow::Cow::Owned(template.render(query)),
            None => std::borrow::Cow::Borrowed(url),
        })
    }
}

/// The answer a media expects on an endpoint (defaults where the registry has none: a GIF for
/// impressions, a redirect for clicks).
pub fn answer_for(
    registry: &MediaRegistry,
    channel: &str,
    template: Option<&str>,
    endpoint: Endpoint,
) -> Answer {
    let protocol = protocol_of(registry, channel, template);
    match endpoint {
        Endpoint::Impression => match protocol.and_then(|p| p.impression_answer.clone()) {
            Some(ImpressionAnswer::NoContent) => Answer::NoContent,
            Some(ImpressionAnswer::ServerToServer {
                status,
                content_type,
                body,
            }) => Answer::Body {
                status,
                content_type,
                body,
            },
            Some(ImpressionAnswer::Gif) | None => Answer::Gif,
        },
        Endpoint::Click | Endpoint::Feedback => match protocol.and_then(|p| p.click_answer.clone())
        {
            Some(ClickAnswer::ServerToServer {
                status,
                content_type,
                body,
            }) => Answer::Body {
                status,
                content_type,
                body,
            },
            Some(ClickAnswer::Redirect) | None => Answer::Redirect,
        },
    }
}

/// The protocol of a link: the activity's template if it names one of the media's protocols,
/// else the media's default.
pub fn protocol_of<'r>(
    registry: &'r MediaRegistry,
    channel: &str,
    template: Option<&str>,
) -> Option<&'r Protocol> {
    let media = registry.get(channel)?;
    Some(
        template
            .and_then(|t| media.protocol_by_id(t))
            .unwrap_or(&media.protocol),
    )
}

/// The in-memory link table.
#[derive(Debug, Default, Clone)]
pub struct LinkCache {
    /// Shared targets: a hit clones an `Arc`, not the strings.
    inner: Arc<RwLock<HashMap<u64, Arc<LinkTarget>>>>,
}

impl LinkCache {
    pub fn get(&self, link_id: u64) -> Option<Arc<LinkTarget>> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&link_id)
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rebuilds the table from every activity and feedback task in the catalog.
    pub fn reload(
        &self,
        catalog: &Catalog,
        registry: &MediaRegistry,
    ) -> Result<usize, CatalogError> {
        let mut table = HashMap::new();
        for a in catalog.all_activities()? {
            for (link, endpoint) in [
                (a.impression_link, Endpoint::Impression),
                (a.click_link, Endpoint::Click),
            ] {
                let answer = answer_for(registry, &a.channel, a.template.as_deref(), endpoint);
                let landing_template = match (&a.landing_url, &answer) {
                    (Some(url), Answer::Redirect) if endpoint == Endpoint::Click => {
                        LandingTemplate::compile(
                            url,
                            protocol_of(registry, &a.channel, a.template.as_deref()),
                        )
                    }
                    _ => None,
                };
                table.insert(
                    link,
                    Arc::new(LinkTarget {
                        activity_id: a.id,
                        workspace: a.workspace.clone(),
                        channel: a.channel.clone(),
                        template: a.template.clone(),
                        status: a.status,
                        endpoint,
                        landing_url: a.landing_url.clone(),
                        landing_template,
                        answer,
                    }),
                );
            }
        }
        // Tencent feedback tasks: `/fb/` links, no activity (`activity_id` 0; the task is known
        // by its link id), answered and decoded by the media's feedback protocol.
        for t in catalog.feedback_tasks(None)? {
            table.insert(
                t.link,
                Arc::new(LinkTarget {
                    activity_id: 0,
                    workspace: t.workspace.clone(),
                    channel: t.channel.clone(),
                    answer: answer_for(registry, &t.channel, Some(&t.protocol), Endpoint::Feedback),
                    template: Some(t.protocol),
                    status: t.status,
                    endpoint: Endpoint::Feedback,
                    landing_url: None,
                    landing_template: None,
                }),
            );
        }
        let n = table.len();
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = table;
        Ok(n)
    }
}

/// An activity with its copy-paste links.
#[derive(Debug, Clone, Serialize)]
pub struct ActivityLinks {
    #[serde(flatten)]
    pub activity: Activity,
    pub impression_url: String,
    pub click_url: String,
    /// For media whose ad orders carry the third party's link (`third_party: chained` in
    /// `schemas/media.yaml`): the activity's Miaozhen / AdMaster click URL wrapping ours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chained_click_url: Option<String>,
}

/// Mints the impression and click URLs of an activity: `{base}/i/{token}?{media macros}`.
pub fn activity_links(
    activity: Activity,
    base_url: &str,
    signer: &LinkSigner,
    registry: &MediaRegistry,
) -> ActivityLinks {
    let url = |endpoint: Endpoint, link: u64, kind: LinkKind| {
        let query = protocol_of(registry, &activity.channel, activity.template.as_deref())
            .map(|p| p.query_template(kind))
            .unwrap_or_default();
        let token = signer.mint(link, endpoint);
        let base = base_url.trim_end_matches('/');
        let path = endpoint.path();
        if query.is_empty() {
            format!("{base}{path}{token}")
        } else {
            format!("{base}{path}{token}?{query}")
        }
    };
    let click_url = url(Endpoint::Click, activity.click_link, LinkKind::Click);
    let chained = registry
        .get(&activity.channel)
        .is_some_and(|m| m.third_party == ThirdPartyMode::Chained);
    let chained_click_url = chained
        .then(|| crate::forward::chained_click_url(&activity.third_party_click, &click_url))
        .flatten();
    ActivityLinks {
        impression_url: url(
            Endpoint::Impression,
            activity.impression_link,
            LinkKind::Impression,
        ),
        click_url,
        chained_click_url,
        activity,
    }
}
