//! The guard against Jenkins' URL binding, attacked the way Jenkins routes:
//! every dangerous action × every alias family that reaches its object ×
//! spellings that servlet containers read alike or differently, each sent
//! through the proxy (refused, and the double records nothing) and, where
//! the double's own URL binding would answer it, straight to the double
//! (which then carries the action out). The benign twins (jobs, folders and
//! views named like actions) pass, and user rules hold on every alias.

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::support::jenkins::MockJenkins;
use crate::support::proxy::{request, Extra, Http, Proxy, Secret};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse";
/// `alice:correct horse`.
const BASIC: &str = "Basic YWxpY2U6Y29ycmVjdCBob3JzZQ==";

/// A double with the objects the corpus names: a folder with a job, an
/// extra view, an agent, and jobs named like actions.
async fn jenkins() -> MockJenkins {
    let mut builder = MockJenkins::builder()
        .user(USER, PASSWORD)
        .folder("folder")
        .job("folder/inner")
        .folder("credentials")
        .job("credentials/script")
        .view("extra")
        .agent("agent-1");
    for twin in TWINS {
        builder = builder.job(twin);
    }
    builder.start().await
}

/// Jobs named like the actions: harmless names.
const TWINS: &[&str] = &[
    "script",
    "scriptText",
    "eval",
    "cli",
    "manage",
    "heapDump",
    "restart",
    "exit",
    "reload",
    "scriptApproval",
    "systemInfo",
    "log",
    "me",
    "view",
];

/// One dangerous action, written as Jenkins routes it on its object.
struct Attack {
    action: &'static str,
    /// Refused only for unsafe methods: sent as POST.
    writes: bool,
    /// A WebSocket upgrade goes with it.
    upgrade: bool,
}

const fn attack(action: &'static str) -> Attack {
    Attack {
        action,
        writes: false,
        upgrade: false,
    }
}

/// Dangerous actions of the root object.
const ROOT_ACTIONS: &[Attack] = &[
    attack("script"),
    attack("scriptText"),
    attack("eval"),
    attack("cli"),
    Attack {
        action: "cli/ws",
        writes: false,
        upgrade: true,
    },
    attack("heapDump"),
    attack("heapDump/heapdump.hprof"),
    attack("scriptApproval"),
    attack("credentials"),
    attack("credentials/store/system/domain/_/"),
    attack("restart"),
    attack("safeRestart"),
    attack("exit"),
    attack("safeExit"),
    attack("quietDown"),
    attack("cancelQuietDown"),
    attack("reload"),
    attack("gc"),
    attack("simulateOutOfMemory"),
    attack("prepareShutdown"),
    attack("systemInfo"),
    attack("threadDump"),
    attack("log"),
    Attack {
        action: "administrativeMonitor/legacyApiToken/revokeAllSelected",
        writes: true,
        upgrade: false,
    },
    Attack {
        action: "configureSecurity",
        writes: true,
        upgrade: false,
    },
    Attack {
        action: "pluginManager/uploadPlugin",
        writes: true,
        upgrade: false,
    },
];

/// Prefixes that reach the root object.
const ROOT_ALIASES: &[&str] = &[
    "",
    "/manage",
    "/manage/manage",
    "/manage/manage/manage/manage",
    "/view/all",
    "/view/extra",
    "/view/all/view/extra",
    "/manage/view/all",
    "/me/my-views/view/all",
    "/user/alice/my-views/view/all",
    "/job/sample-job/lastBuiltOn",
    "/job/sample-job/1/builtOn",
    "/computer/(built-in)/node",
    "/computer/(master)/node",
    // Arrays of computers, the built-in node first (`Jenkins.getComputers`,
    // `ComputerSet.get_all`), and a build's earlier build's node.
    "/computers/0/node",
    "/computer/_all/0/node",
    "/job/sample-job/lastBuild/previousBuild/builtOn",
    // `Jenkins.getItemGroup()` is the root; the primary view has its actions;
    // an executor's owner is its computer.
    "/itemGroup",
    "/manage/itemGroup/itemGroup",
    "/primaryView",
    "/computer/(built-in)/executors/0/owner/node",
];

/// Dangerous actions of an agent or the built-in node.
const COMPUTER_ACTIONS: &[Attack] = &[
    attack("script"),
    attack("scriptText"),
    attack("heapDump"),
    attack("jenkins-agent.jnlp"),
    attack("slave-agent.jnlp"),
    attack("systemInfo"),
    attack("threadDump"),
    attack("log"),
];

const COMPUTER_ALIASES: &[&str] = &[
    "/computer/(built-in)",
    "/computer/(master)",
    "/manage/computer/(built-in)",
    "/computer/agent-1",
    "/manage/manage/computer/agent-1",
    "/view/all/computer/agent-1",
    "/node/agent-1/computer",
    "/computer/agent-1/node/computer",
    "/computers/0",
    "/computers/1",
    "/computer/_all/1",
    "/computer/agent-1/executors/1/owner",
];

/// Dangerous actions of a user.
const USER_ACTIONS: &[Attack] = &[
    attack("descriptorByName/jenkins.security.ApiTokenProperty/generateNewToken"),
    attack("descriptorByName/jenkins.security.ApiTokenProperty/revoke"),
    attack("descriptor/jenkins.security.ApiTokenProperty/generateNewToken"),
    // `Jenkins.getDescriptor` finds a descriptor by its short name too.
    attack("descriptorByName/ApiTokenProperty/generateNewToken"),
    Attack {
        action: "descriptorByName/jenkins.security.seed.UserSeedProperty/renewSessionSeed",
        writes: true,
        upgrade: false,
    },
    attack("credentials/store/user/domain/_/"),
    Attack {
        action: "configSubmit",
        writes: true,
        upgrade: false,
    },
];

const USER_ALIASES: &[&str] = &[
    "/user/alice",
    "/me",
    "/securityRealm/user/alice",
    "/manage/user/alice",
    "/manage/me",
    "/me/my-views/user",
    "/user/bob",
];

/// Folder credentials, through the folder's aliases.
const FOLDER_ACTIONS: &[Attack] = &[attack("credentials"), attack("credentials/store/folder/")];

const FOLDER_ALIASES: &[&str] = &[
    "/job/folder",
    "/item/folder",
    "/view/all/job/folder",
    "/manage/job/folder",
    "/me/my-views/view/all/job/folder",
    "/user/alice/my-views/view/extra/job/folder",
];

/// `GET path` straight to the double, as the proxy's user.
async fn direct(http: &Http, jenkins: &MockJenkins, path: &str) -> crate::support::proxy::Reply {
    let url = format!("{}{path}", jenkins.root_url().trim_end_matches('/'));
    http.send(request(
        Method::GET,
        &url,
        &[("authorization", BASIC)],
        Bytes::new(),
    ))
    .await
}

/// How a path is spelled.
#[derive(Clone, Copy, Debug)]
enum Spelling {
    Plain,
    TrailingSlash,
    /// The action's first letter percent-encoded.
    Encoded,
    /// A `;jsessionid` parameter on the action.
    PathParameter,
    /// A detour through a job and back with `..`.
    DotSegments,
    /// `..;/` (Tomcat-style) and `/./`.
    DotSemicolon,
    DoubledSlashes,
    /// Below here: spellings Jetty and Stapler do not read as the action
    /// (so the double answers 404), which the proxy refuses all the same.
    UpperCase,
    DoubleEncoded,
    EncodedSlash,
}

const SPELLINGS: [Spelling; 10] = [
    Spelling::Plain,
    Spelling::TrailingSlash,
    Spelling::Encoded,
    Spelling::PathParameter,
    Spelling::DotSegments,
    Spelling::DotSemicolon,
    Spelling::DoubledSlashes,
    Spelling::UpperCase,
    Spelling::DoubleEncoded,
    Spelling::EncodedSlash,
];

impl Spelling {
    /// Whether Jetty and Stapler (and so the double) read it as written.
    fn read_alike(self) -> bool {
        !matches!(
            self,
            Spelling::UpperCase | Spelling::DoubleEncoded | Spelling::EncodedSlash
        )
    }

    fn spell(self, prefix: &str, action: &str) -> String {
        let (first, rest) = action.split_at(1);
        match self {
            Spelling::Plain => format!("{prefix}/{action}"),
            Spelling::TrailingSlash => format!("{prefix}/{}/", action.trim_end_matches('/')),
            Spelling::Encoded => format!("{prefix}/%{:02x}{rest}", first.as_bytes()[0]),
            Spelling::PathParameter => match action.split_once('/') {
                Some((head, tail)) => format!("{prefix}/{head};jsessionid=x/{tail}"),
                None => format!("{prefix}/{action};jsessionid=x"),
            },
            // Two `..` undo the detour `job/sample-job`.
            Spelling::DotSegments => format!("{prefix}/job/sample-job/../../{action}"),
            Spelling::DotSemicolon => format!("{prefix}/./x/..;/{action}"),
            Spelling::DoubledSlashes => format!("/{}//{action}", prefix.trim_start_matches('/')),
            Spelling::UpperCase => format!("{prefix}/{}", action.to_uppercase()),
            Spelling::DoubleEncoded => format!("{prefix}/%25{:02x}{rest}", first.as_bytes()[0]),
            Spelling::EncodedSlash => format!("{prefix}/%2F{action}"),
        }
    }
}

/// The corpus: every action of every object kind, through each alias, in
/// each spelling, with the method to send it with.
fn corpus() -> Vec<(Method, String, bool)> {
    let families: [(&[Attack], &[&str]); 4] = [
        (ROOT_ACTIONS, ROOT_ALIASES),
        (COMPUTER_ACTIONS, COMPUTER_ALIASES),
        (USER_ACTIONS, USER_ALIASES),
        (FOLDER_ACTIONS, FOLDER_ALIASES),
    ];
    let mut out = Vec::new();
    for (actions, aliases) in families {
        for attack in actions {
            for prefix in aliases {
                for (i, spelling) in SPELLINGS.iter().enumerate() {
                    let path = spelling.spell(prefix, attack.action);
                    let method = if attack.writes || i % 2 == 1 {
                        Method::POST
                    } else {
                        Method::GET
                    };
                    out.push((method, path, attack.upgrade));
                }
            }
        }
    }
    out
}

/// Every case of the corpus is refused by the proxy, before anything
/// reaches Jenkins (not even a crumb fetch); the same requests sent straight
/// to the double carry out a dangerous action wherever Jetty and Stapler
/// would read them as the action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_attacks_never_reach_jenkins() {
    let jenkins = jenkins().await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let http = Http::new();
    let cases = corpus();
    assert!(cases.len() >= 1000, "only {} cases", cases.len());
    let mut refused_by_rule = std::collections::BTreeMap::<String, usize>::new();
    for (method, path, upgrade) in &cases {
        let mut headers = vec![];
        if *upgrade {
            headers.extend([("connection", "upgrade"), ("upgrade", "websocket")]);
        }
        let reply = http
            .send(request(
                method.clone(),
                &proxy.url(path),
                &headers,
                Bytes::new(),
            ))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {}",
            reply.text()
        );
        assert_eq!(
            reply.header("x-crumb-proxy-error"),
            Some("denied-by-policy"),
            "{method} {path}"
        );
        *refused_by_rule
            .entry(reply.header("x-crumb-proxy-rule").unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(
        jenkins.requests().is_empty(),
        "Jenkins saw {:?}",
        jenkins
            .requests()
            .iter()
            .map(|r| &r.path)
            .collect::<Vec<_>>()
    );
    for rule in [
        "script-console",
        "cli",
        "heap-dump",
        "script-approval",
        "credentials",
        "lifecycle",
        "diagnostics",
        "security-config",
        "plugins",
        "agent-secrets",
        "api-tokens",
    ] {
        assert!(
            refused_by_rule.contains_key(rule),
            "{rule}: {refused_by_rule:?}"
        );
    }

    // The double would have answered: straight to it, every spelling that
    // Jetty and Stapler read as the action carries the action out.
    let mut answered = 0;
    for spelling in SPELLINGS.iter().filter(|s| s.read_alike()) {
        for (actions, aliases) in [
            (ROOT_ACTIONS, ROOT_ALIASES),
            (COMPUTER_ACTIONS, COMPUTER_ALIASES),
            (USER_ACTIONS, USER_ALIASES),
            (FOLDER_ACTIONS, FOLDER_ALIASES),
        ] {
            for attack in actions {
                for prefix in aliases {
                    let path = spelling.spell(prefix, attack.action);
                    let before = jenkins.dangerous().len();
                    let reply = direct(&http, &jenkins, &path).await;
                    assert_eq!(
                        reply.status,
                        StatusCode::OK,
                        "direct {path}: {}",
                        reply.text()
                    );
                    assert_eq!(jenkins.dangerous().len(), before + 1, "direct {path}");
                    answered += 1;
                }
            }
        }
    }
    assert!(answered >= 700, "{answered}");
    eprintln!(
        "{} attacks refused ({refused_by_rule:?}); {answered} of them carried out by the double when sent to it directly",
        cases.len()
    );
    proxy.stop().await;
    jenkins.finish().await;
}

/// Jobs, folders and views named like actions are names, not actions:
/// through every alias they reach Jenkins, and nothing dangerous happens.
#[tokio::test]
async fn benign_twins_pass() {
    let jenkins = jenkins().await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let http = Http::new();
    let mut sent = 0;
    for twin in TWINS {
        for prefix in [
            "",
            "/view/all",
            "/manage",
            "/me/my-views/view/all",
            "/view/extra",
        ] {
            for (method, action, status) in [
                (Method::POST, "build", StatusCode::CREATED),
                (Method::GET, "api/json", StatusCode::OK),
            ] {
                let path = format!("{prefix}/job/{twin}/{action}");
                let reply = http
                    .send(request(
                        method.clone(),
                        &proxy.url(&path),
                        &[],
                        Bytes::new(),
                    ))
                    .await;
                assert_eq!(reply.status, status, "{method} {path}: {}", reply.text());
                sent += 1;
            }
        }
    }
    for path in [
        "/job/folder/job/inner/build",
        "/view/all/job/folder/job/inner/build",
        "/job/folder/view/all/job/inner/build",
        "/job/credentials/job/script/build",
        "/item/credentials/item/script/build",
    ] {
        let reply = http.post(&proxy.url(path)).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{path}: {}",
            reply.text()
        );
        sent += 1;
    }
    for path in [
        "/computer/agent-1/api/json",
        "/user/bob/api/json",
        "/me/api/json",
        "/whoAmI/api/json",
    ] {
        let reply = http.get(&proxy.url(path)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
        sent += 1;
    }
    assert!(jenkins.dangerous().is_empty(), "{:?}", jenkins.dangerous());
    let reached = jenkins
        .requests()
        .iter()
        .filter(|r| !r.path.starts_with("/crumbIssuer") && r.query.as_deref() != Some("tree=url"))
        .count();
    assert_eq!(reached, sent);
    proxy.stop().await;
    jenkins.finish().await;
}

/// A user rule written for an item covers every alias of it, and a method
/// not in upper case is refused, never matched past a rule.
#[tokio::test]
async fn user_rules_cover_every_alias() {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .job("protected")
        .job("other")
        .view("extra")
        .start()
        .await;
    let extra = Extra {
        tail: "[[policy.rules]]\naction = \"deny\"\nmethods = [\"POST\"]\npath = \"/job/protected/**\"\n\
               [[policy.rules]]\naction = \"deny\"\nmethods = [\"POST\"]\npath = \"/job/internal-secret/**\"\n"
            .into(),
        ..Extra::default()
    };
    let proxy = Proxy::start_with(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &extra,
    )
    .await;
    let http = Http::new();
    for path in [
        "/job/protected/build",
        "/job/Protected/buildWithParameters",
        "/view/all/job/protected/build",
        "/view/extra/view/all/job/protected/build",
        "/manage/view/all/job/protected/build",
        "/manage/manage/job/protected/build",
        "/me/my-views/view/all/job/protected/build",
        "/user/alice/my-views/view/extra/job/protected/build",
        "/me/my-views/job/protected/build",
        "/item/protected/build",
        "/itemByFullName/protected/build",
        "/job/other/lastBuiltOn/job/protected/build",
        "/job/other/../protected/build",
        "/job/%70rotected/build",
        "/computers/0/node/job/protected/build",
        "/computer/_all/0/node/item/protected/build",
        "/job/other/1/builtOn/job/protected/build",
        "/itemGroup/job/protected/build",
        "/primaryView/job/protected/build",
        "/computer/(built-in)/executors/0/owner/node/job/protected/build",
        // Stapler resolves the raw `/./` and keeps `%2e%2e` as names; a
        // decoder that resolves them would see `/`.
        "/./job/protected/build/%252e%252e/%252e%252e/%252e%252e",
    ] {
        let reply = http.post(&proxy.url(path)).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{path}: {}",
            reply.text()
        );
        assert_eq!(
            reply.header("x-crumb-proxy-rule"),
            Some("policy.rules[0]"),
            "{path}"
        );
    }
    assert_eq!(jenkins.accepted_triggers("protected"), 0);
    // Jenkins compares item names as Java's CASE_INSENSITIVE_ORDER does, so
    // `ſ` is `s` and `ı`, `İ` are `i` to it, and to the rules.
    for path in [
        "/job/%C4%B1nternal-%C5%BFecret/build",
        "/job/%C4%B0NTERNAL-SECRET/build",
        "/job/internal-%E2%84%AAecret/build",
    ] {
        let reply = http.post(&proxy.url(path)).await;
        let text = reply.text();
        if path.contains("%E2%84%AA") {
            // The Kelvin sign folds to `k`: another name, not denied.
            assert_ne!(
                reply.header("x-crumb-proxy-rule"),
                Some("policy.rules[1]"),
                "{text}"
            );
        } else {
            assert_eq!(
                reply.header("x-crumb-proxy-rule"),
                Some("policy.rules[1]"),
                "{path}: {text}"
            );
        }
    }
    // Reading it is not covered by a POST rule.
    let reply = http
        .get(&proxy.url("/view/all/job/protected/api/json"))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = http.post(&proxy.url("/view/all/job/other/build")).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    // A method in lower case, or one no rule can name, never gets past.
    for method in ["post", "Post", "PROPFIND", "FOO"] {
        let reply = http
            .send(request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                &proxy.url("/job/protected/build"),
                &[],
                Bytes::new(),
            ))
            .await;
        assert_eq!(reply.status, StatusCode::NOT_IMPLEMENTED, "{method}");
        assert_eq!(reply.header("x-crumb-proxy-error"), Some("method-refused"));
        assert!(reply.text().contains("case-sensitive"), "{}", reply.text());
    }
    let reply = http
        .send(request(Method::TRACE, &proxy.url("/"), &[], Bytes::new()))
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(jenkins.accepted_triggers("protected"), 0);
    assert_eq!(jenkins.accepted_triggers("other"), 1);
    proxy.stop().await;
    jenkins.finish().await;
}

/// `config/least-privilege.toml`, the default-deny recipe: a build-trigger
/// script's requests pass (through any alias of them), and nothing else
/// does: no case of the attack corpus and none of a list of ordinary
/// requests the script does not need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_privilege_recipe_admits_only_what_it_allows() {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .folder("apps")
        .job("apps/web")
        .folder("credentials")
        .view("extra")
        .agent("agent-1")
        .start()
        .await;
    let recipe = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/least-privilege.toml"),
    )
    .unwrap();
    let rules = &recipe[recipe.find("[[policy.rules]]").unwrap()..];
    let extra = Extra {
        tail: rules.to_owned(),
        ..Extra::default()
    };
    let proxy = Proxy::start_with(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &extra,
    )
    .await;
    let http = Http::new();

    // What the script needs, also through aliases.
    let reply = http.post(&proxy.url("/job/apps/job/web/build")).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let queue = reply.header("location").unwrap().to_owned();
    let queue_path = &queue[queue.find("/queue/").unwrap()..];
    let reply = http.get(&proxy.url(&format!("{queue_path}api/json"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{queue_path}");
    for path in [
        "/view/all/job/apps/job/web/buildWithParameters",
        "/me/my-views/view/all/job/apps/job/web/build",
        "/manage/job/apps/view/extra/job/web/build",
    ] {
        let reply = http.post(&proxy.url(path)).await;
        // 303: a build with the same parameters is already queued.
        assert!(
            matches!(reply.status, StatusCode::CREATED | StatusCode::SEE_OTHER),
            "{path}: {} {}",
            reply.status,
            reply.text()
        );
    }
    for path in [
        "/job/apps/job/web/api/json",
        "/view/all/job/apps/job/web/api/json",
    ] {
        let reply = http.get(&proxy.url(path)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
    }

    // Everything else: the attack corpus, and requests the script does not
    // need, whatever the alias.
    let mut refused = 0;
    let others = [
        (Method::GET, "/api/json"),
        (Method::GET, "/"),
        (Method::POST, "/createItem?name=x"),
        (Method::POST, "/job/apps/job/web/config.xml"),
        (Method::POST, "/job/apps/job/web/doDelete"),
        (Method::POST, "/job/sample-job/build"),
        (Method::POST, "/view/all/job/sample-job/build"),
        (Method::GET, "/job/apps/credentials/store/folder/api/json"),
        (Method::GET, "/job/apps/job/web/x/script/api/json"),
        (Method::GET, "/job/apps/lastBuiltOn/scriptText/api/json"),
        (Method::GET, "/computer/agent-1/api/json"),
        (Method::GET, "/whoAmI/api/json"),
        // A web method ignores what follows it: these are config.xml,
        // doDelete, configSubmit and createItem, not build or api/json.
        (Method::POST, "/job/apps/job/web/config.xml/build"),
        (Method::POST, "/job/apps/job/web/doDelete/build"),
        (
            Method::POST,
            "/job/apps/job/web/configSubmit/buildWithParameters",
        ),
        (
            Method::POST,
            "/job/apps/createItem/build?name=evil&mode=copy&from=web",
        ),
        (Method::GET, "/job/apps/job/web/config.xml/api/json"),
        (Method::GET, "/job/apps/job/web/1/artifact/x/api/json"),
    ];
    let corpus = corpus();
    for (method, path) in others
        .iter()
        .map(|(m, p)| (m.clone(), (*p).to_owned()))
        .chain(corpus.into_iter().map(|(m, p, _)| (m, p)))
    {
        let reply = http
            .send(request(
                method.clone(),
                &proxy.url(&path),
                &[],
                Bytes::new(),
            ))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {}",
            reply.text()
        );
        refused += 1;
    }
    assert!(refused > 1000);
    assert!(jenkins.dangerous().is_empty(), "{:?}", jenkins.dangerous());
    assert_eq!(jenkins.accepted_triggers("sample-job"), 0);
    proxy.stop().await;
    jenkins.finish().await;
}

/// An inbound agent's page shows the command that launches it, its secret
/// included: refused, for agents, on every alias; the built-in node's page
/// passes.
#[tokio::test]
async fn agent_pages_are_refused() {
    let jenkins = jenkins().await;
    let proxy = Proxy::start(&jenkins.root_url(), USER, Secret::Password(PASSWORD)).await;
    let http = Http::new();
    for path in [
        "/computer/agent-1/",
        "/computer/agent-1",
        "/computer/agent-1/index",
        "/node/agent-1/",
        "/manage/computer/agent-1/",
        "/computers/1/",
    ] {
        assert_eq!(
            direct(&http, &jenkins, path).await.status,
            StatusCode::OK,
            "direct {path}"
        );
        let reply = http.get(&proxy.url(path)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(
            reply.header("x-crumb-proxy-rule"),
            Some("agent-secrets"),
            "{path}"
        );
    }
    assert_eq!(jenkins.dangerous().len(), 6, "{:?}", jenkins.dangerous());
    let reply = http.get(&proxy.url("/computer/(built-in)/")).await;
    assert_eq!(reply.status, StatusCode::OK);
    proxy.stop().await;
    jenkins.finish().await;
}

/// A multibranch branch `feature/foo` is the job `feature%2Ffoo`, spelled
/// `feature%252Ffoo` in URLs; Stapler decodes each segment once, and so
/// does the rule that names it.
#[tokio::test]
async fn rules_name_multibranch_branches() {
    let jenkins = MockJenkins::builder()
        .user(USER, PASSWORD)
        .folder("repo")
        .job("repo/feature%2Ffoo")
        .job("repo/feature%2Fbar")
        .start()
        .await;
    let extra = Extra {
        tail: "[[policy.rules]]\naction = \"deny\"\npath = \"/job/repo/job/feature%2ffoo/**\"\n"
            .into(),
        ..Extra::default()
    };
    let proxy = Proxy::start_with(
        &jenkins.root_url(),
        USER,
        Secret::Password(PASSWORD),
        &extra,
    )
    .await;
    let http = Http::new();
    let reply = http
        .post(&proxy.url("/job/repo/job/feature%252Ffoo/build"))
        .await;
    assert_eq!(
        reply.header("x-crumb-proxy-rule"),
        Some("policy.rules[0]"),
        "{}",
        reply.text()
    );
    let reply = http
        .post(&proxy.url("/job/repo/job/feature%252Fbar/build"))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert_eq!(jenkins.accepted_triggers("repo/feature%2Ffoo"), 0);
    assert_eq!(jenkins.accepted_triggers("repo/feature%2Fbar"), 1);
    proxy.stop().await;
    jenkins.finish().await;
}
