//! The shipped media registry (`schemas/media.yaml`) against the specs: the 37 media and 81
//! rows of `spec/media-backflow.md` §1, and the 20 example calls of `spec/media-protocols.md` §7
//! mapped as its §6.1 table says.

use std::path::Path;

use backflow::collect::fields::CanonicalField as F;
use backflow::collect::registry::{
    BackflowMethod, ClickAnswer, ImpressionAnswer, LinkKind, MediaRegistry, PlacementMethod,
    Protocol, Support, TimestampUnit,
};

fn shipped() -> MediaRegistry {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/media.yaml");
    match MediaRegistry::load(&path) {
        Ok(registry) => registry,
        Err(errors) => panic!(
            "schemas/media.yaml does not load:\n{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// `spec/media-backflow.md` §1.3: Chinese name and placements present (D, B, P).
const MEDIA_LIST: [(&str, &str); 37] = [
    ("哔哩哔哩弹幕网", "DB"),
    ("微博", "PB"),
    ("抖音/头条", "DBP"),
    ("快手", "DBP"),
    ("爱奇艺", "DBP"),
    ("芒果TV", "DBP"),
    ("腾讯系", "BP"),
    ("网易云", "DBP"),
    ("喜马拉雅", "DP"),
    ("搜狐视频", "DBP"),
    ("土豆视频", "DB"),
    ("趣头条", "DB"),
    ("新浪视频", "DB"),
    ("斗鱼TV", "DB"),
    ("360手机助手", "DB"),
    ("91助手", "DB"),
    ("火山小视频", "DBP"),
    ("西瓜视频", "DBP"),
    ("PP助手", "DB"),
    ("多玩游戏", "DB"),
    ("陌陌原生广告平台", "DB"),
    ("汇川（原UC）", "DB"),
    ("搜狗搜索", "DB"),
    ("美图效果营销", "DBP"),
    ("美柚", "DB"),
    ("百度", "DB"),
    ("一点资讯", "DB"),
    ("知乎", "DP"),
    ("长虹OTT", "DP"),
    ("TCL-OTT", "DP"),
    ("海信-OTT", "DP"),
    ("UC卧龙", "B"),
    ("oppo", "DP"),
    ("soul", "DP"),
    ("华为应用市场", "BP"),
    ("vivo", "DP"),
    ("下厨房", "D"),
];

#[test]
fn shipped_registry_has_the_37_media_and_81_rows_of_the_manual() {
    let registry = shipped();
    let manual: Vec<_> = registry.media().filter(|m| m.in_manual).collect();
    assert_eq!(manual.len(), 37);
    assert_eq!(registry.placement_count(), 81);
    let beyond: Vec<_> = registry
        .media()
        .filter(|m| !m.in_manual)
        .map(|m| m.id.as_str())
        .collect();
    assert_eq!(
        beyond,
        ["xiaohongshu"],
        "media served beyond the manual's list"
    );
    let names: Vec<_> = manual.iter().map(|m| m.name.as_str()).collect();
    let expected: Vec<_> = MEDIA_LIST.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, expected, "media in the manual's order");
    for (name, methods) in MEDIA_LIST {
        let Some(media) = registry.get_by_name(name) else {
            panic!("{name} missing")
        };
        let letters: String = media
            .placements
            .iter()
            .map(|p| match p.method {
                PlacementMethod::DirectBuy => 'D',
                PlacementMethod::BiddingPlatform => 'B',
                PlacementMethod::Programmatic => 'P',
            })
            .collect();
        assert_eq!(letters, methods, "{name}");
        assert_eq!(registry.get(&media.id).map(|m| m.name.as_str()), Some(name));
    }
    let mut rows: Vec<u32> = registry.placements().map(|(_, p)| p.row).collect();
    rows.sort_unstable();
    assert_eq!(rows, (1..=81).collect::<Vec<_>>());
    for id in [
        "ocean_engine",
        "tencent_ads",
        "kuaishou",
        "baidu",
        "weibo",
        "bilibili",
        "zhihu",
        "oppo",
        "huawei",
        "vivo",
    ] {
        assert!(registry.get(id).is_some(), "{id}");
    }
}

#[test]
fn shipped_rows_match_the_counts_of_the_manual() {
    // spec/media-backflow.md §1.2.
    let registry = shipped();
    let count = |pred: &dyn Fn(&backflow::collect::registry::Placement) -> bool| {
        registry.placements().filter(|(_, p)| pred(p)).count()
    };
    assert_eq!(count(&|p| p.method == PlacementMethod::DirectBuy), 33);
    assert_eq!(count(&|p| p.method == PlacementMethod::BiddingPlatform), 28);
    assert_eq!(count(&|p| p.method == PlacementMethod::Programmatic), 20);
    assert_eq!(count(&|p| p.backflow == BackflowMethod::AdMonitoring), 79);
    assert_eq!(count(&|p| p.backflow == BackflowMethod::Unidesk), 1);
    assert_eq!(count(&|p| p.backflow == BackflowMethod::FeedbackUrl), 1);
    assert_eq!(count(&|p| p.impression == Support::Supported), 77);
    assert_eq!(count(&|p| p.impression == Support::Unspecified), 2);
    assert_eq!(count(&|p| p.impression == Support::NotSupported), 2);
    assert_eq!(count(&|p| p.click == Support::Supported), 73);
    assert_eq!(count(&|p| p.click == Support::NoClickBehaviour), 6);
    assert_eq!(count(&|p| p.click == Support::NotSupported), 2);
    assert_eq!(count(&|p| p.dual_link), 78);
    // Row 1 (FS-01) and row 72 (FS-16) carry the manual's field lists verbatim.
    let row = |n: u32| registry.placements().find(|(_, p)| p.row == n);
    let Some((bilibili, row1)) = row(1) else {
        panic!("row 1")
    };
    assert_eq!(bilibili.id, "bilibili");
    assert_eq!(row1.fields.len(), 13);
    assert_eq!(row1.name(), "媒体直投");
    let Some((uc, row72)) = row(72) else {
        panic!("row 72")
    };
    assert_eq!(uc.id, "uc_wolong");
    assert_eq!(row72.fields, ["deviceid", "创意", "时间戳", "IP"]);
}

fn body_ret(answer: Option<&ClickAnswer>) -> Option<i64> {
    match answer {
        Some(ClickAnswer::ServerToServer {
            status: 200,
            content_type,
            body,
        }) if content_type == "application/json" => serde_json::from_str::<serde_json::Value>(body)
            .ok()?
            .get("ret")?
            .as_i64(),
        _ => None,
    }
}

#[test]
fn answers_follow_design_and_the_media_protocols() {
    let registry = shipped();
    let media = |id: &str| registry.get(id).unwrap_or_else(|| panic!("{id}"));
    // DESIGN.md: Ocean Engine reports clicks server-to-server by default; CLIENT_SEND redirects.
    let oe = media("ocean_engine");
    assert!(matches!(
        oe.protocol.click_answer,
        Some(ClickAnswer::ServerToServer { status: 200, .. })
    ));
    assert_eq!(
        oe.protocol.timestamp_unit,
        Some(TimestampUnit::Milliseconds)
    );
    let client = oe.protocol_by_id("ocean_engine_client_send");
    assert_eq!(
        client.and_then(|p| p.click_answer.clone()),
        Some(ClickAnswer::Redirect)
    );
    // Tencent: JSON with ret = 0 on both mechanisms, impressions included.
    let tencent = media("tencent_ads");
    assert_eq!(body_ret(tencent.protocol.click_answer.as_ref()), Some(0));
    assert!(matches!(
        tencent.protocol.impression_answer,
        Some(ImpressionAnswer::ServerToServer { status: 200, .. })
    ));
    let Some(feedback) = tencent.feedback_protocol() else {
        panic!("tencent feedback")
    };
    assert_eq!(feedback.id, "tencent_feedback");
    assert_eq!(body_ret(feedback.click_answer.as_ref()), Some(0));
    assert_eq!(feedback.impression_answer, None);
    assert_eq!(feedback.query_template(LinkKind::Click), "");
    assert_eq!(
        tencent.protocol.timestamp_unit,
        Some(TimestampUnit::Seconds)
    );
    // Device-fired MMA links redirect and answer impressions with the GIF.
    for id in ["bilibili", "vivo", "iqiyi", "huawei", "changhong_ott"] {
        assert_eq!(
            media(id).protocol.click_answer,
            Some(ClickAnswer::Redirect),
            "{id}"
        );
        assert_eq!(
            media(id).protocol.impression_answer,
            Some(ImpressionAnswer::Gif),
            "{id}"
        );
    }
    for id in ["kuaishou", "weibo", "zhihu", "baidu"] {
        assert_eq!(
            body_ret(media(id).protocol.click_answer.as_ref()),
            Some(0),
            "{id}"
        );
    }
    assert_eq!(
        media("zhihu").protocol.timestamp_unit,
        Some(TimestampUnit::Seconds)
    );
    assert_eq!(
        media("weibo").protocol.timestamp_unit,
        Some(TimestampUnit::Milliseconds)
    );
}

#[test]
fn query_templates_are_pasteable() {
    let registry = shipped();
    let media = |id: &str| registry.get(id).unwrap_or_else(|| panic!("{id}"));
    let oe = media("ocean_engine").query_template(LinkKind::Click);
    assert!(
        oe.starts_with("advertiser_id=__ADVERTISER_ID__&campaign_id=__CAMPAIGN_ID__&aid=__AID__&"),
        "{oe}"
    );
    assert!(oe.ends_with("&callback=__CALLBACK_PARAM__"), "{oe}");
    let zhihu = media("zhihu").query_template(LinkKind::Click);
    assert!(zhihu.starts_with("zhs2s=1&imei=__IMEI__&"), "{zhihu}");
    let baidu = media("baidu").query_template(LinkKind::Click);
    assert!(
        baidu.starts_with("userid={{USER_ID}}&pid={{PLAN_ID}}&"),
        "{baidu}"
    );
    let weibo = media("weibo").query_template(LinkKind::Click);
    assert!(
        weibo.starts_with("campaignid={CAMPAIGN_ID}&ip={ip}&clicktime={clicktime}&"),
        "{weibo}"
    );
    let oppo = media("oppo").query_template(LinkKind::Click);
    assert!(
        oppo.contains("&useragent=$ua$&imei=$im$&oaid=__OAID__&"),
        "{oppo}"
    );
    let Some(admaster) = registry.template("admaster") else {
        panic!("admaster")
    };
    assert!(
        admaster
            .query_template(LinkKind::Click)
            .starts_with("0a__OS__,0c__IMEI__,")
    );
    // Every media that supports a kind has a non-empty template for it.
    for media in registry.media() {
        for kind in [LinkKind::Impression, LinkKind::Click] {
            if media
                .placements
                .iter()
                .any(|p| p.supports(kind) && p.backflow != BackflowMethod::FeedbackUrl)
            {
                assert!(
                    !media.query_template(kind).is_empty(),
                    "{} {kind:?}",
                    media.id
                );
            }
        }
    }
}

/// One example call of `spec/media-protocols.md` §7: example number, media id (or template id
/// for Xiaohongshu, which is not one of the manual's 37 media), protocol id, link kind, whether
/// the hit is from iOS, the query as written in the spec, and each parameter's canonical field
/// per §6.1 (in query order; `None` = no canonical field, kept only in the raw query).
struct Example {
    n: u32,
    media: &'static str,
    protocol: &'static str,
    kind: LinkKind,
    ios: bool,
    query: &'static str,
    fields: &'static [(&'static str, Option<F>)],
}

use LinkKind::{Click as C, Impression as I};

#[rustfmt::skip]
const EXAMPLES: &[Example] = &[
    Example { n: 1, media: "ocean_engine", protocol: "ocean_engine", kind: C, ios: false,
        query: "aid=1780012345678901&cid=1780012345679999&campaign_id=1779000000000123&csite=40001&ctype=5&imei=0b1f5c17d4d1484f7f8b9349d542a75b&oaid=6e3f1c2a-8b4d-4c3e-9f10-2a7b5c8d9e01&androidid=6d7e9146fdc6416658b5e148489e7172&mac=b06efabeb184d3a424cac213ae9fa688&os=0&ip=203.0.113.45&ua=Mozilla%2F5.0%20%28Linux%3B%20Android%2012%3B%20V2145A%20Build%2FSP1A.210812.003%3B%20wv%29%20AppleWebKit%2F537.36%20%28KHTML%2C%20like%20Gecko%29%20Version%2F4.0%20Chrome%2F97.0.4692.98%20Mobile%20Safari%2F537.36&model=V2145A&ts=1718000000123&request_id=2024061014132001021720408614E3C0AB&callback=EJiw267wvfQCGKf2g74ZIPD89-vIATAMOAFCIjIwMTkxMTI3MTQxMTEzMDEwMDI2MDc3MjE1MTUwNTczNTBIAQ%3D%3D",
        fields: &[("aid", Some(F::AdgroupId)), ("cid", Some(F::CreativeId)), ("campaign_id", Some(F::CampaignId)), ("csite", Some(F::AdSlot)), ("ctype", None), ("imei", Some(F::ImeiMd5)), ("oaid", Some(F::Oaid)), ("androidid", Some(F::AndroidIdMd5)), ("mac", Some(F::MacMd5)), ("os", Some(F::Os)), ("ip", Some(F::Ip)), ("ua", Some(F::Ua)), ("model", Some(F::Model)), ("ts", Some(F::Ts)), ("request_id", Some(F::RequestId)), ("callback", Some(F::Callback))] },
    Example { n: 2, media: "ocean_engine", protocol: "ocean_engine", kind: C, ios: true,
        query: "aid=1780012345670002&cid=1780012345670003&idfa=00000000-0000-0000-0000-000000000000&caid=%5B%7B%22caid_md5%22%3A%229f7d3c1e0b8a4f6e2d1c0b9a8f7e6d5c%22%2C%22version%22%3A%2220230330%22%7D%2C%7B%22caid_md5%22%3A%221a2b3c4d5e6f708192a3b4c5d6e7f809%22%2C%22version%22%3A%2220220111%22%7D%5D&os=1&ip=198.51.100.7&ts=1718000001456&callback=CKDv7aWx-QIQ_4qM_ZkCGKzwm6LKAiDM5tyVBigBMAw4AUIiMjAyNDA2MTAxNDEzMjAwMTAyMTcyMDQwODYxNEUzQzBBQkgB",
        fields: &[("aid", Some(F::AdgroupId)), ("cid", Some(F::CreativeId)), ("idfa", Some(F::Idfa)), ("caid", Some(F::Caid)), ("os", Some(F::Os)), ("ip", Some(F::Ip)), ("ts", Some(F::Ts)), ("callback", Some(F::Callback))] },
    Example { n: 3, media: "ocean_engine", protocol: "ocean_engine", kind: C, ios: false,
        query: "aid=1780012345678901&cid=1780012345679999&imei=__IMEI__&oaid=__OAID__&androidid=__ANDROIDID__&os=0&ip=203.0.113.9&ts=1718000002789&callback=__CALLBACK_PARAM__",
        fields: &[("aid", Some(F::AdgroupId)), ("cid", Some(F::CreativeId)), ("imei", Some(F::ImeiMd5)), ("oaid", Some(F::Oaid)), ("androidid", Some(F::AndroidIdMd5)), ("os", Some(F::Os)), ("ip", Some(F::Ip)), ("ts", Some(F::Ts)), ("callback", Some(F::Callback))] },
    // `ipv6` fills the separate ipv6 field (fields.rs, DESIGN.md "IP"); §6.1 lists it under ip.
    Example { n: 4, media: "ocean_engine", protocol: "ocean_engine", kind: I, ios: false,
        query: "aid=1780012345678901&cid=1780012345679999&csite=10001&os=0&ip=2001:db8:85a3::8a2e:370:7334&ipv6=2001%3Adb8%3A85a3%3A%3A8a2e%3A370%3A7334&oaid=6e3f1c2a-8b4d-4c3e-9f10-2a7b5c8d9e01&ts=1718000003000",
        fields: &[("aid", Some(F::AdgroupId)), ("cid", Some(F::CreativeId)), ("csite", Some(F::AdSlot)), ("os", Some(F::Os)), ("ip", Some(F::Ip)), ("ipv6", Some(F::Ipv6)), ("oaid", Some(F::Oaid)), ("ts", Some(F::Ts))] },
    Example { n: 5, media: "tencent_ads", protocol: "tencent_ads", kind: C, ios: false,
        query: "click_id=24oi6xq2aaakvagnqu7a&click_time=1718000004&account_id=25610001&adgroup_id=228691429&dynamic_creative_id=654321&muid=0b1f5c17d4d1484f7f8b9349d542a75b&hash_android_id=6d7e9146fdc6416658b5e148489e7172&oaid=6e3f1c2a-8b4d-4c3e-9f10-2a7b5c8d9e01&hash_oaid=aded2e2caff9d1d1b7b2918987b69922&device_os_type=android&ip=183.226.102.120&user_agent=Dalvik%2F2.1.0%20%28Linux%3B%20U%3B%20Android%2013%3B%20PGT-AN10%29&site_set=SITE_SET_MOBILE_UNION&callback=http%3A%2F%2Ftracking.e.qq.com%2Fconv%3Fcb%3DdGVzdF9jYl92YWx1ZQ%253D%253D%26conv_id%3D10023456",
        fields: &[("click_id", Some(F::ClickId)), ("click_time", Some(F::Ts)), ("account_id", Some(F::AccountId)), ("adgroup_id", Some(F::AdgroupId)), ("dynamic_creative_id", Some(F::CreativeId)), ("muid", Some(F::ImeiMd5)), ("hash_android_id", Some(F::AndroidIdMd5)), ("oaid", Some(F::Oaid)), ("hash_oaid", Some(F::OaidMd5)), ("device_os_type", Some(F::Os)), ("ip", Some(F::Ip)), ("user_agent", Some(F::Ua)), ("site_set", Some(F::AdSlot)), ("callback", Some(F::Callback))] },
    Example { n: 6, media: "tencent_ads", protocol: "tencent_feedback", kind: C, ios: true,
        query: "src=gdt&muid=f2d1311ca5c1ecb214c19a26e9ddbad0&click_time=1718000005&appid=1234567890&click_id=007210548a030059ccdfd1d4&app_type=ios&advertiser_id=20000&ip=198.51.100.23&user_agent=Mozilla%2F5.0%20%28iPhone%3B%20CPU%20iPhone%20OS%2017_5%20like%20Mac%20OS%20X%29&campaign_id=102043154&adgroup_id=228691429&creative_id=251986746&request_id=f3k2j1h0g9f8e7d6c5b4&site_set=SITE_SET_WECHAT&process_time=1718000005",
        fields: &[("src", None), ("muid", Some(F::IdfaMd5)), ("click_time", Some(F::Ts)), ("appid", None), ("click_id", Some(F::ClickId)), ("app_type", Some(F::Os)), ("advertiser_id", Some(F::AccountId)), ("ip", Some(F::Ip)), ("user_agent", Some(F::Ua)), ("campaign_id", Some(F::CampaignId)), ("adgroup_id", Some(F::AdgroupId)), ("creative_id", Some(F::CreativeId)), ("request_id", Some(F::RequestId)), ("site_set", Some(F::AdSlot)), ("process_time", None)] },
    Example { n: 7, media: "tencent_ads", protocol: "tencent_ads", kind: C, ios: true,
        query: "click_id=wx0ewinbalytptma00&click_time=1718000006&muid=&hash_android_id=&hash_oaid=&caid=__QAID_CAA__&device_os_type=ios&ip=&user_agent=&callback=http%3A%2F%2Ftracking.e.qq.com%2Fconv%3Fcb%3DYWJjZA%253D%253D%26conv_id%3D10023456",
        fields: &[("click_id", Some(F::ClickId)), ("click_time", Some(F::Ts)), ("muid", Some(F::IdfaMd5)), ("hash_android_id", Some(F::AndroidIdMd5)), ("hash_oaid", Some(F::OaidMd5)), ("caid", Some(F::Caid)), ("device_os_type", Some(F::Os)), ("ip", Some(F::Ip)), ("user_agent", Some(F::Ua)), ("callback", Some(F::Callback))] },
    Example { n: 8, media: "kuaishou", protocol: "kuaishou", kind: C, ios: false,
        query: "accountid=10099887&did=3344556677&aid=1122334455&cid=223372032123415808&csite=7&imei=0b1f5c17d4d1484f7f8b9349d542a75b&oaid=6e3f1c2a-8b4d-4c3e-9f10-2a7b5c8d9e01&androidid=6d7e9146fdc6416658b5e148489e7172&mac=b06efabeb184d3a424cac213ae9fa688&os=0&ts=1718000007123&ip=203.0.113.77&ua=Mozilla%2F5.0%20%28Linux%3B%20Android%2011%3B%20M2012K11AC%29&callback=http%3A%2F%2Fad.partner.gifshow.com%2Ftrack%2Factivate%3Fcallback%3DDHAJASALKFyk1uCKBYCyXp-iIDS-uHDd_a5SJ9Dbwkqv46dahahd87TW7hhkJkd",
        fields: &[("accountid", Some(F::AccountId)), ("did", Some(F::CampaignId)), ("aid", Some(F::AdgroupId)), ("cid", Some(F::CreativeId)), ("csite", Some(F::AdSlot)), ("imei", Some(F::ImeiMd5)), ("oaid", Some(F::Oaid)), ("androidid", Some(F::AndroidIdMd5)), ("mac", Some(F::MacMd5)), ("os", Some(F::Os)), ("ts", Some(F::Ts)), ("ip", Some(F::Ip)), ("ua", Some(F::Ua)), ("callback", Some(F::Callback))] },
    Example { n: 9, media: "kuaishou", protocol: "kuaishou", kind: C, ios: true,
        query: "aid=1122334456&cid=223372032123415809&idfa2=F2D1311CA5C1ECB214C19A26E9DDBAD0&mac=__MAC2__&oaid=__OAID__&os=1&ts=1718000008456&ip=198.51.100.99&callback=http%3A%2F%2Fad.partner.gifshow.com%2Ftrack%2Factivate%3Fcallback%3DXWXwjjvhAL1CjyAuo32wE8RNSDdpKO1CPVY0",
        fields: &[("aid", Some(F::AdgroupId)), ("cid", Some(F::CreativeId)), ("idfa2", Some(F::IdfaMd5)), ("mac", Some(F::MacMd5)), ("oaid", Some(F::Oaid)), ("os", Some(F::Os)), ("ts", Some(F::Ts)), ("ip", Some(F::Ip)), ("callback", Some(F::Callback))] },
    Example { n: 10, media: "baidu", protocol: "baidu", kind: C, ios: false,
        query: "userid=31419527&pid=700123456&uid=8800123456&aid=90001234567&click_id=bdck_7f3a9c2e41d0&imei_md5=0b1f5c17d4d1484f7f8b9349d542a75b&oaid=6e3f1c2a-8b4d-4c3e-9f10-2a7b5c8d9e01&android_id_md5=6d7e9146fdc6416658b5e148489e7172&ip=203.0.113.120&os=2&ua=Mozilla%2F5.0%20%28Linux%3B%20Android%2010%3B%20HMA-AL00%29&callback_url=https%3A%2F%2Fals.baidu.com%2Fcb%2FactionCb%3Fa_type%3D%7B%7BATYPE%7D%7D%26a_value%3D%7B%7BAVALUE%7D%7D%26s%3D2%26o%3Dhttp%253A%252F%252Fm.example.com%26ext_info%3DGk7_long_base64_payload&sign=9e107d9d372bb6826bd81d3542a419d6",
        fields: &[("userid", Some(F::AccountId)), ("pid", Some(F::CampaignId)), ("uid", Some(F::AdgroupId)), ("aid", Some(F::CreativeId)), ("click_id", Some(F::ClickId)), ("imei_md5", Some(F::ImeiMd5)), ("oaid", Some(F::Oaid)), ("android_id_md5", Some(F::AndroidIdMd5)), ("ip", Some(F::Ip)), ("os", Some(F::Os)), ("ua", Some(F::Ua)), ("callback_url", Some(F::Callback)), ("sign", None)] },
    Example { n: 11, media: "baidu", protocol: "baidu_joint_debug", kind: C, ios: false,
        query: "advertiser_id=__USER_ID__&cid=__IDEA_ID__&campaign_id=__PLAN_ID__&aid=__UNIT_ID__&imei=__IMEI__&ts=__TS__&callType=v2&ext_info=__EXT_INFO__&sign=__SIGN__",
        fields: &[("advertiser_id", Some(F::AccountId)), ("cid", Some(F::CreativeId)), ("campaign_id", Some(F::CampaignId)), ("aid", Some(F::AdgroupId)), ("imei", Some(F::ImeiMd5)), ("ts", Some(F::Ts)), ("callType", None), ("ext_info", Some(F::Callback)), ("sign", None)] },
    Example { n: 12, media: "weibo", protocol: "weibo", kind: C, ios: true,
        query: "campaignid=12345&ip=61.135.152.218&clicktime=1718000012816&idfa_md5=F2D1311CA5C1ECB214C19A26E9DDBAD0&IMP=E575BF2F8F39F1F062EFC5BA9E8744DAB730614DD5662C0A82C793A7AFEA3365C336F15E125B1BB61BDDF9123C6C77725678FB46259836835DECCBC26597D042&ad_id=123456&creative_id=54321&brand=&devicetype=ios&osversion=ios17.5.1&caid=43e260c0cd69b81073173045939e5947",
        fields: &[("campaignid", Some(F::CampaignId)), ("ip", Some(F::Ip)), ("clicktime", Some(F::Ts)), ("idfa_md5", Some(F::IdfaMd5)), ("IMP", Some(F::Callback)), ("ad_id", Some(F::AdgroupId)), ("creative_id", Some(F::CreativeId)), ("brand", None), ("devicetype", Some(F::Os)), ("osversion", Some(F::OsVersion)), ("caid", Some(F::Caid))] },
    Example { n: 13, media: "zhihu", protocol: "zhihu", kind: C, ios: false,
        query: "zhs2s=1&imei=0b1f5c17d4d1484f7f8b9349d542a75b&oaid=6e3f1c2a-8b4d-4c3e-9f10-2a7b5c8d9e01&androidid=6d7e9146fdc6416658b5e148489e7172&os=0&ip=203.0.113.66&ua=Mozilla%2F5.0%20%28Linux%3B%20Android%2012%3B%20ANA-AN00%29%20AppleWebKit%2F537.36%20ZhihuHybrid%20osee2unifiedRelease%2F9.30.0%20zhihu&ts=1718000013&campaign=556677&creative=889900&sessionid=6f1c8e2a-0b3d-4e5f-9a7b-1c2d3e4f5a6b&callback=https%3A%2F%2Fsugar.zhihu.com%2Fplutus_adreaper_callback%3Fsi%3D6f1c8e2a0b3d4e5f%26cid%3D889900%26event%3D__EVENTTYPE__%26value%3D__EVENTVALUE__%26ts%3D__TIMESTAMP__",
        fields: &[("zhs2s", None), ("imei", Some(F::ImeiMd5)), ("oaid", Some(F::Oaid)), ("androidid", Some(F::AndroidIdMd5)), ("os", Some(F::Os)), ("ip", Some(F::Ip)), ("ua", Some(F::Ua)), ("ts", Some(F::Ts)), ("campaign", Some(F::CampaignId)), ("creative", Some(F::CreativeId)), ("sessionid", Some(F::RequestId)), ("callback", Some(F::Callback))] },
    Example { n: 14, media: "xiaohongshu", protocol: "xiaohongshu", kind: C, ios: false,
        query: "click_id=atestMdo9fK5B62TSkrqg3fE082PYcu24bE&callback_param=atestQ2FsbGJhY2tQYXJhbQ&advertiser_id=5f1e2d3c4b5a69788796a5b4&campaign_id=112233&unit_id=445566&creativity_id=778899",
        fields: &[("click_id", Some(F::ClickId)), ("callback_param", Some(F::Callback)), ("advertiser_id", Some(F::AccountId)), ("campaign_id", Some(F::CampaignId)), ("unit_id", Some(F::AdgroupId)), ("creativity_id", Some(F::CreativeId))] },
    Example { n: 15, media: "oppo", protocol: "oppo", kind: C, ios: false,
        query: "os=android&os_version=12&model=PGT-AN10&lang=ZH&country=CN&width=0&height=0&pkg=com.heytap.browser&app_version=1.4.0&useragent=&net_type=UNKNOWN&carrier=0&progress=-1&imei=0b1f5c17d4d1484f7f8b9349d542a75b&oaid=&ad_id=10002300123&ad_name=%E6%8B%89%E6%B4%BB%E6%B5%8B%E8%AF%95&req_id=9f8e7d6c5b4a39281706",
        fields: &[("os", Some(F::Os)), ("os_version", Some(F::OsVersion)), ("model", Some(F::Model)), ("lang", None), ("country", None), ("width", None), ("height", None), ("pkg", Some(F::AdSlot)), ("app_version", None), ("useragent", Some(F::Ua)), ("net_type", None), ("carrier", None), ("progress", None), ("imei", Some(F::ImeiMd5)), ("oaid", Some(F::Oaid)), ("ad_id", Some(F::CreativeId)), ("ad_name", None), ("req_id", Some(F::RequestId))] },
    // `androidid` is raw here (§5.7): it fills the raw android_id field, hashed on ingest.
    Example { n: 16, media: "oppo", protocol: "oppo_store", kind: C, ios: false,
        query: "adid=109537846&imeiMd5=0b1f5c17d4d1484f7f8b9349d542a75b&oaid=&timestamp=1718000016000&androidid=a1b2c3d4e5f60718",
        fields: &[("adid", Some(F::CreativeId)), ("imeiMd5", Some(F::ImeiMd5)), ("oaid", Some(F::Oaid)), ("timestamp", Some(F::Ts)), ("androidid", Some(F::AndroidId))] },
    Example { n: 17, media: "bilibili", protocol: "miaozhen", kind: I, ios: false,
        query: "k=2185278&p=7jFd3&dx=__IPDX__&rt=2&ns=198.51.100.4&ni=__IESID__&mo=0&m0=__OPENUDID__&m1a=6d7e9146fdc6416658b5e148489e7172&m2=0b1f5c17d4d1484f7f8b9349d542a75b&m4=__AAID__&m5=&m6a=b06efabeb184d3a424cac213ae9fa688&m11=6e3f1c2a-8b4d-4c3e-9f10-2a7b5c8d9e01&tr=1718000017000q172a18a61a211q115&o=https://www.example.org/landing?gacd=9754254-2185278&dgc=ba&cid=2185278",
        fields: &[("k", Some(F::CampaignId)), ("p", Some(F::AdSlot)), ("dx", None), ("rt", None), ("ns", Some(F::Ip)), ("ni", None), ("mo", Some(F::Os)), ("m0", None), ("m1a", Some(F::AndroidIdMd5)), ("m2", Some(F::ImeiMd5)), ("m4", Some(F::Aaid)), ("m5", Some(F::Idfa)), ("m6a", Some(F::MacMd5)), ("m11", Some(F::Oaid)), ("tr", Some(F::RequestId)), ("o", None)] },
    // AdMaster: comma tokens `<code><value>`; the "parameter" is the code.
    Example { n: 18, media: "iqiyi", protocol: "admaster", kind: C, ios: true,
        query: "a82981,b1587357,c3297,i0,m101,8a2,8b3,0a1,n__MAC__,z6D92078A-8246-4BA4-AE5B-76104861E7DC,0c__IMEI__,f203.0.113.200,t1718000018,riPhone15%2C2,h,uhttps%3A%2F%2Fwww.example.org%2Fpromo",
        fields: &[("a", Some(F::CampaignId)), ("b", Some(F::CampaignId)), ("c", Some(F::CreativeId)), ("i", None), ("m", None), ("8a", None), ("8b", None), ("0a", Some(F::Os)), ("n", Some(F::MacMd5)), ("z", Some(F::Idfa)), ("0c", Some(F::ImeiMd5)), ("f", Some(F::Ip)), ("t", Some(F::Ts)), ("r", Some(F::Model)), ("h", None), ("u", None)] },
    Example { n: 19, media: "ocean_engine", protocol: "ocean_engine", kind: C, ios: false,
        query: "aid=1780012345670009&cid=1780012345670010&os=0&ip=203.0.113.88&ts=1718000019999&ua=Mozilla%2F5.0%20%28Linux%3B%20Android%2013%3B%2022081212C%20Build%2FTKQ1.220829.002%3B%20wv%29%20AppleWebKit%2F537.36%20%28KHTML%2C%20like%20Gecko%29%20Version%2F4.0%20Chrome%2F116.0.0.0%20Mobile%20Safari%2F537.36%20aweme_290100%20JsSdk%2F1.0%20NetType%2FWIFI%20Channel%2Fxiaomi_1128_64%20app_version%2F29.1.0%20ByteLocale%2Fzh-CN%20Region%2FCN%20AppSkin%2Fwhite%20AppTheme%2Flight%20BytedanceWebview%2Fd8a21c6%20WebView%2F075113004008%20ByteDanceVideoSDK%2F1.3.9%20TTWebView%2F1160070018911%20DeviceScore%2F87.5%20BatteryLevel%2F64%20ScreenRes%2F1440x3200%20Density%2F3.5%20Font%2F1.0%20Brand%2FXiaomi%20Model%2F22081212C%20OSVer%2F13%20Build%2FTKQ1.220829.002%20CPU%2Farm64-v8a%20GPU%2FAdreno730%20Carrier%2F46000%20Lang%2Fzh_CN_%23Hans%20TZ%2FAsia_Shanghai%20SessionID%2F7e1f0c9a-31b2-4c5d-8e6f-0a1b2c3d4e5f%20ExpGroup%2FA17%2CB4%2CC22%2CD9%2CE1%20Features%2Fliveroom%2Cecom%2Csearch%2Cminiapp%2Clynx%2Chybrid%20PluginVer%2Flive%3A29.1.0%3Becom%3A29.1.3%3Blynx%3A2.14.0%20Trace%2F00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01&model=22081212C&ip=__IP__&callback=B2C3D4E5F6A7B8C9D0E1F2A3B4C5D6E7F8A9B0C1D2E3F4A5B6C7D8E9F0A1B2C3",
        fields: &[("aid", Some(F::AdgroupId)), ("cid", Some(F::CreativeId)), ("os", Some(F::Os)), ("ip", Some(F::Ip)), ("ts", Some(F::Ts)), ("ua", Some(F::Ua)), ("model", Some(F::Model)), ("ip", Some(F::Ip)), ("callback", Some(F::Callback))] },
    // Huawei: no column in §6.1; the documented __OAID__ plus MMA macros; content_id unmapped.
    Example { n: 20, media: "huawei", protocol: "huawei", kind: I, ios: false,
        query: "oaid=00000000-0000-0000-0000-000000000000&os=4&ip=2001:db8::1&ua=Mozilla/5.0+(Linux;+Android+12;+HarmonyOS;+NOH-AN00)&ts=1718000020000&content_id=4455667788&campaign_id=99887766",
        fields: &[("oaid", Some(F::Oaid)), ("os", Some(F::Os)), ("ip", Some(F::Ip)), ("ua", Some(F::Ua)), ("ts", Some(F::Ts)), ("content_id", None), ("campaign_id", Some(F::CampaignId))] },
];

/// The parameter names of an example's query, in order, split the way the protocol is written:
/// `&`/`=` pairs (with a landing parameter running to the end), or AdMaster comma tokens whose
/// codes are checked against the expected ones.
fn param_names(protocol: &Protocol, example: &Example) -> Vec<String> {
    if protocol.equalizer.is_empty() {
        let tokens: Vec<_> = example.query.split(&protocol.separator).collect();
        assert_eq!(tokens.len(), example.fields.len(), "example {}", example.n);
        return tokens
            .iter()
            .zip(example.fields)
            .map(|(token, (code, _))| {
                assert!(
                    token.starts_with(code),
                    "example {}: {token} vs {code}",
                    example.n
                );
                code.to_string()
            })
            .collect();
    }
    let mut query = example.query;
    let mut landing = None;
    if let Some(param) = &protocol.landing_param {
        let marker = format!("&{param}=");
        if let Some(at) = query.find(&marker) {
            landing = Some(param.clone());
            query = &query[..at];
        }
    }
    let mut names: Vec<String> = query
        .split(&protocol.separator)
        .map(|pair| pair.split('=').next().unwrap_or_default().to_string())
        .collect();
    names.extend(landing);
    names
}

#[test]
fn every_example_call_maps_as_the_canonical_field_table_says() {
    let registry = shipped();
    assert_eq!(EXAMPLES.len(), 20);
    for example in EXAMPLES {
        let protocol = match registry.get(example.media) {
            Some(media) => media.protocol_by_id(example.protocol),
            None => registry.template(example.protocol),
        };
        let Some(protocol) = protocol else {
            panic!(
                "example {}: no protocol {}/{}",
                example.n, example.media, example.protocol
            )
        };
        let names = param_names(protocol, example);
        let expected: Vec<_> = example
            .fields
            .iter()
            .map(|(name, _)| name.to_string())
            .collect();
        assert_eq!(
            names, expected,
            "example {}: every parameter has an expectation",
            example.n
        );
        for (param, field) in example.fields {
            assert_eq!(
                protocol.field_for_param_on(example.kind, param, example.ios),
                *field,
                "example {} ({}): parameter `{param}`",
                example.n,
                protocol.id
            );
        }
    }
}
