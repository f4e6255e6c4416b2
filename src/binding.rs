//! A model of Jenkins' URL binding: which object a request path reaches,
//! and which action it applies to that object.
//!
//! Jenkins does not route by prefix. Stapler walks the path segment by
//! segment from the root object (`jenkins.model.Jenkins`): a getter taking a
//! name binds `job/NAME`, `view/NAME`, `user/NAME`, `computer/NAME`; a
//! `getDynamic` resolves actions by URL name; a `StaplerFallback` hands
//! unknown tokens to another object; a `doXxx` method or a view answers. So
//! one object answers under many URLs, and a guard that matches prefixes
//! (the proxy's first one did) is walked around. This module does what
//! Stapler does, on the canonical path (`canonical`), and gives every
//! request a [`Binding`]: the object, written in one canonical way, and the
//! action segments after it. The policy (`filter`) decides on bindings,
//! never on the raw path.
//!
//! What the walk knows, with the Jenkins classes it follows
//! (`docs/jenkins-url-binding.md` has the sources):
//!
//! - `manage` on the root is `ManageJenkinsAction`, whose `StaplerFallback`
//!   is the root again: `/manage/manage/x` is `/x`. So is `itemGroup`
//!   (`Jenkins.getItemGroup`).
//! - Items: `job/N`, `item/N` (`Jenkins.getItem`) and `itemByFullName/F%2FN`
//!   on the root; `job/N` and `item/N` in folders. `parent` of an item is its
//!   folder or the root; `parent` and `project` of a build (`Run.getParent`,
//!   `AbstractBuild.getProject`) its job.
//! - Views (`View.getJob`/`getItem`, "the one used in URL binding") hand out
//!   every item of their owner's item group, listed or not, so
//!   `/view/V/view/W/job/J` is `/job/J`; nested views
//!   (`ViewGroup.getView`), `owner`, `primaryView` of the root, a folder or
//!   `my-views`. A token a view does not know itself may be one of its
//!   owner's actions (`View.getDynamic` searches `getOwnerViewActions`, the
//!   root's actions for a top-level view): both readings are kept.
//! - Users: `user/N`, `me` (`Jenkins.getMe`, the proxy's own user),
//!   `securityRealm/user/N` (`HudsonPrivateSecurityRealm.getUser`),
//!   `people/N`; `my-views` (`MyViewsProperty`, whose views belong to the
//!   root's item group and whose fallback is its primary view), and
//!   `my-views/user`.
//! - Agents: `computer/N` (`ComputerSet.getDynamic`), where `(master)`,
//!   `(built-in)` and the empty name are the built-in node; `node/N`
//!   (`Jenkins.getNode`), `computer/N/node` and `node/N/computer`
//!   (`Slave.getComputer`); the arrays `computers/I` and `computer/_all/I`;
//!   executors and their `owner`. The built-in node's `node` is the root
//!   itself (`Computer.getNode` returns `Jenkins`). A node the path does not
//!   name (`builtOn` of a build, `lastBuiltOn` of a job, `computers/I`) is
//!   read both as the root and as an agent.
//! - Other naming getters (`label/N`, `plugin/N`, `descriptorByName/N` on
//!   any object, `fingerprint/N` …): the next segment is a name.
//! - Files: after `artifact` on a build, `ws` on a job and `userContent` on
//!   the root, segments are a file's path (`DirectoryBrowserSupport`), not
//!   tokens.
//!
//! A token right after one of these naming getters is a *name*, which
//! Jenkins never dispatches on: a job called `script` or a folder called
//! `credentials` is harmless. Every other segment is in *action* position,
//! including every segment below an action the walk does not follow (there
//! `node` or `computer` may be an argument-free getter), and the dangerous
//! actions ([`Danger`]) are refused wherever they appear in action
//! position, not only right after a known object: plugins add getters the
//! model cannot know, and an unknown one might lead back to the root.
//!
//! What this module does not decide: which actions a user may reach
//! (`filter`), nor how a path is decoded (`canonical`).

use std::fmt;

/// At most this many readings of one path ([`resolve`]); a path with more
/// (views nested this deep) is refused whole.
const MAX_READINGS: usize = 16;

/// An object of Jenkins' model, as a URL reaches it. Names are the path's
/// own (canonical, lower-case) segments.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Object<'a> {
    Root,
    /// A job or folder, by full name: `["folder", "job"]`.
    Item(Vec<&'a str>),
    /// A build of a job: its number or permalink (`lastbuild`).
    Run(Vec<&'a str>, &'a str),
    /// A view and what owns it (the root, a folder, a view, `my-views`).
    View(Box<Object<'a>>, &'a str),
    /// A user's views (`MyViewsProperty`).
    MyViews(&'a str),
    User(&'a str),
    /// An agent, `(built-in)` for the built-in node.
    Computer(&'a str),
    /// An object another naming getter binds below `parent`: `label/x`,
    /// `descriptorbyname/x`.
    Named(Box<Object<'a>>, &'static str, &'a str),
}

/// Where one reading of a request path lands: the object and the
/// segments after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Binding<'a> {
    object: Object<'a>,
    /// The action and whatever follows it (`["build"]`, `["api", "json"]`).
    action: &'a [String],
}

/// A dangerous action: a built-in rule's name and why it is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Danger {
    pub(crate) rule: &'static str,
    pub(crate) what: &'static str,
}

/// Every reading of `segments` (a canonical path, see
/// [`crate::canonical::CanonicalPath::readings`]); `me` is the proxy's own
/// user, the one `/me` names. `None` when there are more than
/// [`MAX_READINGS`].
pub(crate) fn resolve<'a>(segments: &'a [String], me: &'a str) -> Option<Vec<Binding<'a>>> {
    let mut out = Vec::new();
    walk(Object::Root, segments, me, &mut out)?;
    Some(out)
}

/// Follows `rest` from `object` until an action; each fork adds a reading.
fn walk<'a>(
    mut object: Object<'a>,
    mut rest: &'a [String],
    me: &'a str,
    out: &mut Vec<Binding<'a>>,
) -> Option<()> {
    loop {
        match navigate(&object, rest, me) {
            Step::To(next, remaining) => {
                object = next;
                rest = remaining;
            }
            Step::Action => break,
            Step::Either(owner) => {
                // The token may be the view's own action, or one of its
                // owner's: keep both readings.
                walk(owner, rest, me, out)?;
                break;
            }
            Step::Both(first, second, remaining) => {
                // A getter whose object the path does not tell: follow
                // each object it may be.
                walk(first, remaining, me, out)?;
                object = second;
                rest = remaining;
            }
        }
    }
    if out.len() >= MAX_READINGS {
        return None;
    }
    out.push(Binding {
        object,
        action: rest,
    });
    Some(())
}

/// What one segment does at an object.
enum Step<'a> {
    /// Moves to another object, leaving the rest.
    To(Object<'a>, &'a [String]),
    /// The segment is an action on this object.
    Action,
    /// An action on this object, or a token for `owner` to resolve.
    Either(Object<'a>),
    /// Moves to one of two objects, leaving the rest.
    Both(Object<'a>, Object<'a>, &'a [String]),
}

/// A node the path does not name (a build's `builtOn`, `computers/N`): the
/// built-in node, whose `node` is the root itself, or an agent.
const SOME_COMPUTER: &str = crate::canonical::UNKNOWN;

/// Where a getter that returns "a node" leads: the root, when it is the
/// built-in node (`Jenkins` is a `Node`), or an agent's computer
/// (`Slave.getComputer`), which the path does not name.
fn some_node<'a>(rest: &'a [String]) -> Step<'a> {
    Step::Both(Object::Root, Object::Computer(SOME_COMPUTER), rest)
}

/// Build numbers and permalinks (`Job.getDynamic`, `PermalinkProjectAction`).
fn is_run(token: &str) -> bool {
    const PERMALINKS: [&str; 8] = [
        "lastbuild",
        "lastcompletedbuild",
        "lastsuccessfulbuild",
        "laststablebuild",
        "lastfailedbuild",
        "lastunsuccessfulbuild",
        "lastunstablebuild",
        "firstbuild",
    ];
    (!token.is_empty() && token.bytes().all(|b| b.is_ascii_digit())) || PERMALINKS.contains(&token)
}

/// The built-in node's names (`Jenkins.getComputer`: "backwards
/// compatibility for URLs").
fn computer_name(name: &str) -> &str {
    match name {
        "" | "(master)" | "(built-in)" => "(built-in)",
        other => other,
    }
}

/// Getters of the root that take a name and bind objects this model does
/// not follow further (`Jenkins.getLabel(String)` …), with the kind written
/// in the canonical path.
fn root_named(token: &str) -> Option<&'static str> {
    Some(match token {
        "label" => "label",
        "labelatom" => "labelatom",
        "plugin" => "plugin",
        "fingerprint" => "fingerprint",
        "administrativemonitor" => "administrativemonitor",
        "cloud" => "cloud",
        "jdk" => "jdk",
        "jnlpjars" => "jnlpjars",
        "federatedloginservice" => "federatedloginservice",
        "adjuncts" => "adjuncts",
        "extensionlist" => "extensionlist",
        "descriptor" | "descriptorbyname" => "descriptorbyname",
        "scm" => "scm",
        "repositorybrowser" => "repositorybrowser",
        "builder" => "builder",
        "buildwrapper" => "buildwrapper",
        "publisher" => "publisher",
        "trigger" => "trigger",
        "retentionstrategy" => "retentionstrategy",
        "jobproperty" => "jobproperty",
        "securityrealms" => "securityrealms",
        _ => return None,
    })
}

/// A view's own tokens (`View`'s web methods and getters); anything else
/// may be one of its owner's actions.
const VIEW_TOKENS: [&str; 19] = [
    "",
    "api",
    "configsubmit",
    "configure",
    "config.xml",
    "dodelete",
    "delete",
    "submitdescription",
    "createitem",
    "newjob",
    "rssall",
    "rssfailed",
    "rsslatest",
    "builds",
    "people",
    "asynchpeople",
    "timeline",
    "childrencontextmenu",
    "contextmenu",
];

/// The object whose actions a view's unknown token may be: the root for a
/// top-level view (and a user's, whose owner falls back to the root's
/// actions), the folder for a folder's view.
fn actions_owner<'a>(owner: &Object<'a>) -> Object<'a> {
    match owner {
        Object::View(owner, _) => actions_owner(owner),
        Object::Item(full) => Object::Item(full.clone()),
        _ => Object::Root,
    }
}

/// The item group a view's items belong to.
fn item_group<'a>(owner: &Object<'a>) -> Vec<&'a str> {
    match owner {
        Object::Item(full) => full.clone(),
        Object::View(owner, _) => item_group(owner),
        _ => Vec::new(),
    }
}

fn navigate<'a>(object: &Object<'a>, rest: &'a [String], me: &'a str) -> Step<'a> {
    let Some((token, after)) = rest.split_first() else {
        return Step::Action;
    };
    // `NAME` after a naming getter, and the rest after it.
    let named = |make: &dyn Fn(&'a str) -> Object<'a>| match after.split_first() {
        Some((name, more)) => Step::To(make(name), more),
        None => Step::Action,
    };
    match (object, token.as_str()) {
        (Object::Root, "manage") if !after.is_empty() => Step::To(Object::Root, after),
        // `Jenkins.getItemGroup()` is the root itself.
        (Object::Root, "itemgroup") => Step::To(Object::Root, after),
        (Object::Root, "job" | "item") => named(&|n| Object::Item(vec![n])),
        // A full name, `folder/job`, in one segment (`%2F` to Stapler).
        (Object::Root, "itembyfullname") => named(&|n| Object::Item(n.split('/').collect())),
        // The primary view, whose name the path does not give.
        (Object::Root | Object::Item(_) | Object::MyViews(_), "primaryview") => Step::To(
            Object::View(Box::new(object.clone()), crate::canonical::UNKNOWN),
            after,
        ),
        (Object::Root, "view") => named(&|n| Object::View(Box::new(Object::Root), n)),
        (Object::Root, "user" | "people") => named(&Object::User),
        (Object::Root, "me") => Step::To(Object::User(me), after),
        (Object::Root, "securityrealm") if after.first().is_some_and(|t| t == "user") => {
            match after.get(1) {
                Some(name) => Step::To(Object::User(name), &after[2..]),
                None => Step::Action,
            }
        }
        // `Jenkins.getComputers()`: an array, indexed by position.
        (Object::Root, "computers") => named(&|_| Object::Computer(SOME_COMPUTER)),
        (Object::Root, "computer" | "node") => named(&|n| {
            if n.is_empty() && token == "node" {
                Object::Root
            } else {
                Object::Computer(computer_name(n))
            }
        }),
        (Object::Root, t) => match root_named(t) {
            Some(kind) => named(&|n| Object::Named(Box::new(Object::Root), kind, n)),
            None => Step::Action,
        },
        (Object::Item(full), "job" | "item") => named(&|n| {
            let mut child = full.clone();
            child.push(n);
            Object::Item(child)
        }),
        (Object::Item(_), "view") => named(&|n| Object::View(Box::new(object.clone()), n)),
        // A folder's item group is the folder.
        (Object::Item(_), "itemgroup") => Step::To(object.clone(), after),
        (Object::Item(full), "parent") => Step::To(
            match full.split_last() {
                Some((_, [])) | None => Object::Root,
                Some((_, folder)) => Object::Item(folder.to_vec()),
            },
            after,
        ),
        (Object::Item(_), "lastbuilton") => some_node(after),
        (Object::Item(full), t) if is_run(t) => Step::To(Object::Run(full.clone(), t), after),
        (Object::Run(full, _), "parent" | "project") => Step::To(Object::Item(full.clone()), after),
        (Object::Run(..), "builton") => some_node(after),
        // The executor running a build, on a computer the path does not
        // name.
        (Object::Run(..), "executor") => Step::To(
            Object::Named(
                Box::new(Object::Computer(SOME_COMPUTER)),
                "executors",
                crate::canonical::UNKNOWN,
            ),
            after,
        ),
        (
            Object::Run(full, _),
            "previousbuild"
            | "nextbuild"
            | "previouscompletedbuild"
            | "previousbuiltbuild"
            | "previousnotfailedbuild"
            | "previoussuccessfulbuild"
            | "previousfailedbuild",
        ) => Step::To(Object::Run(full.clone(), SOME_COMPUTER), after),
        (Object::View(owner, _), "job" | "item") => named(&|n| {
            let mut full = item_group(owner);
            full.push(n);
            Object::Item(full)
        }),
        (Object::View(..), "view") => named(&|n| Object::View(Box::new(object.clone()), n)),
        (Object::View(owner, _), "owner") => Step::To((**owner).clone(), after),
        (Object::View(owner, _), "ownerprimaryview") => Step::To(
            Object::View(owner.clone(), crate::canonical::UNKNOWN),
            after,
        ),
        (Object::View(..), t) if VIEW_TOKENS.contains(&t) => Step::Action,
        (Object::View(owner, _), _) => Step::Either(actions_owner(owner)),
        (Object::MyViews(user), "view") => {
            named(&|n| Object::View(Box::new(Object::MyViews(user)), n))
        }
        (Object::MyViews(user), "user") => Step::To(Object::User(user), after),
        // `MyViewsProperty`'s fallback is its primary view, whose name the
        // path does not give.
        (Object::MyViews(user), _) => Step::To(
            Object::View(Box::new(Object::MyViews(user)), crate::canonical::UNKNOWN),
            rest,
        ),
        (Object::User(user), "my-views") => Step::To(Object::MyViews(user), after),
        (Object::Computer("(built-in)"), "node") => Step::To(Object::Root, after),
        (Object::Computer(SOME_COMPUTER), "node") => some_node(after),
        // An agent's node and its computer are one agent here
        // (`Computer.getNode`, `Slave.getComputer`).
        (Object::Computer(_), "node" | "computer") => Step::To(object.clone(), after),
        // A computer's executors (`getExecutors`, `getOneOffExecutors`,
        // both dispatchable arrays), whose `owner` is the computer again.
        (Object::Computer(_), "executors" | "oneoffexecutors") => {
            named(&|n| Object::Named(Box::new(object.clone()), "executors", n))
        }
        (Object::Named(computer, "executors", _), "owner") => Step::To((**computer).clone(), after),
        // `ComputerSet.get_all()`: every computer, indexed by position.
        (Object::Computer("_all"), t) if is_run(t) => {
            Step::To(Object::Computer(SOME_COMPUTER), after)
        }
        (
            Object::Item(_) | Object::Run(..) | Object::User(_) | Object::Computer(_),
            "descriptor" | "descriptorbyname",
        ) => named(&|n| Object::Named(Box::new(object.clone()), "descriptorbyname", n)),
        _ => Step::Action,
    }
}

// The built-in dangers. Each is refused wherever its token is an action.
const SCRIPT_CONSOLE: Danger = Danger {
    rule: "script-console",
    what:
        "the script console, scriptText and eval run arbitrary code on the controller or an agent",
};
const CLI: Danger = Danger {
    rule: "cli",
    what: "the Jenkins CLI (HTTP and WebSocket) can run any CLI command, groovy included",
};
const HEAP_DUMP: Danger = Danger {
    rule: "heap-dump",
    what: "a heap dump holds every decrypted secret of the controller or agent",
};
const SCRIPT_APPROVAL: Danger = Danger {
    rule: "script-approval",
    what: "approving scripts or signatures lets unsandboxed code run",
};
const AGENT_SECRETS: Danger = Danger {
    rule: "agent-secrets",
    what: "an agent's page and its JNLP file carry the agent's secret",
};
const API_TOKENS: Danger = Danger {
    rule: "api-tokens",
    what: "API token generation and revocation hand out or destroy credentials",
};
const SECURITY_CONFIG: Danger = Danger {
    rule: "security-config",
    what: "user and security configuration changes who may do what",
};
const CREDENTIALS: Danger = Danger {
    rule: "credentials",
    what: "credentials stores hold secrets",
};
const PLUGINS: Danger = Danger {
    rule: "plugins",
    what: "plugin and update-center changes install code on the controller",
};
const LIFECYCLE: Danger = Danger {
    rule: "lifecycle",
    what: "restart, exit, reload, quiet-down, garbage collection and simulated out-of-memory stop or disturb the controller",
};
const DIAGNOSTICS: Danger = Danger {
    rule: "diagnostics",
    what: "system information, logs and thread dumps of the controller or an agent show environment variables, system properties and secrets",
};

/// The dangers a token is wherever it is an action, for any method.
fn danger_anywhere(token: &str) -> Option<Danger> {
    Some(match token {
        "script" | "scripttext" | "eval" => SCRIPT_CONSOLE,
        "cli" => CLI,
        "heapdump" | "heapdump.hprof" => HEAP_DUMP,
        "scriptapproval" => SCRIPT_APPROVAL,
        "jenkins-agent.jnlp" | "slave-agent.jnlp" => AGENT_SECRETS,
        "credentials" | "credentials-store" | "addcredentials" => CREDENTIALS,
        "systeminfo" | "threaddump" | "classicthreaddump" | "dumpexporttable" => DIAGNOSTICS,
        "restart"
        | "saferestart"
        | "exit"
        | "safeexit"
        | "quietdown"
        | "cancelquietdown"
        | "doquietdown"
        | "prepareshutdown"
        | "reload"
        | "gc"
        | "simulateoutofmemory"
        | "fingerprintcleanup"
        | "workspacecleanup" => LIFECYCLE,
        _ => return None,
    })
}

/// The dangers a token is wherever it is an action, for unsafe methods.
fn danger_writing(token: &str) -> Option<Danger> {
    Some(match token {
        "configuresecurity" | "securityrealm" | "authorizationstrategy" | "role-strategy" => {
            SECURITY_CONFIG
        }
        "pluginmanager" | "updatecenter" => PLUGINS,
        _ => return None,
    })
}

/// What the root and agents show about themselves under names too common
/// elsewhere (a build step's `log`) to refuse everywhere.
fn danger_of_machine(token: &str) -> Option<Danger> {
    matches!(token, "log" | "logtext" | "progressivelog").then_some(DIAGNOSTICS)
}

/// `ApiTokenProperty`'s descriptor, by its id or (`Jenkins.getDescriptor`
/// falls back to it) its short class name.
fn is_api_token_descriptor(name: &str) -> bool {
    name == "apitokenproperty" || name.ends_with(".apitokenproperty")
}

impl<'a> Binding<'a> {
    /// The canonical path of this reading: the object written its one
    /// canonical way (`/job/F/job/J`, `/user/U`, `/computer/(built-in)`),
    /// then the action segments. User rules match this.
    pub(crate) fn path(&self) -> Vec<&'a str> {
        let mut out = Vec::with_capacity(4 + self.action.len());
        write_object(&self.object, &mut out);
        out.extend(self.action.iter().map(String::as_str));
        out
    }

    /// The action segments Stapler may dispatch on, with their index
    /// among the action segments, in order: every one up to the start of a
    /// file path. Below an action the model does not follow, a token that
    /// looks like a naming getter (`node`, `computer`) may be an argument-
    /// free getter of whatever that action returned (`Slave.getComputer`),
    /// so nothing there is taken for a name.
    fn action_tokens(&self) -> impl Iterator<Item = (usize, &'a str)> + '_ {
        let files_from = match (&self.object, self.action.first().map(String::as_str)) {
            (Object::Run(..), Some("artifact"))
            | (Object::Item(_), Some("ws"))
            | (Object::Root, Some("usercontent")) => 1,
            _ => self.action.len(),
        };
        self.action[..files_from]
            .iter()
            .enumerate()
            .map(|(i, token)| (i, token.as_str()))
    }

    /// The index in [`Binding::path`] of the action Jenkins applies to the
    /// object (what Stapler dispatches on), if there is one.
    pub(crate) fn action_index(&self) -> Option<usize> {
        (!self.action.is_empty()).then(|| self.object_len())
    }

    /// How many segments of [`Binding::path`] the object takes.
    fn object_len(&self) -> usize {
        object_len(&self.object)
    }

    /// The built-in danger this reading reaches with `unsafe_method`
    /// (anything but GET and HEAD), if any, and the index in
    /// [`Binding::path`] of the segment that makes it one (an allow rule
    /// opens a danger only by naming that segment, `filter`).
    pub(crate) fn danger(&self, unsafe_method: bool) -> Option<(Danger, usize)> {
        let object_len = self.object_len();
        if let Some(index) = self.api_token_segment() {
            return Some((API_TOKENS, index));
        }
        let anywhere = self.action_tokens().find_map(|(i, token)| {
            let danger = danger_anywhere(token).or_else(|| {
                if unsafe_method {
                    danger_writing(token)
                } else {
                    None
                }
            });
            danger.map(|d| (d, object_len + i))
        });
        if anywhere.is_some() {
            return anywhere;
        }
        if let Some(danger) = self.object_danger(unsafe_method) {
            return Some((danger, object_len.saturating_sub(1)));
        }
        match &self.object {
            // An inbound agent's page shows the command that launches it,
            // `-secret` included.
            Object::Computer(name)
                if *name != "(built-in)"
                    && matches!(self.action, [] | [_])
                    && self.action.first().is_none_or(|t| t == "index") =>
            {
                Some((AGENT_SECRETS, object_len - 1))
            }
            Object::Root | Object::Computer(_) => self
                .action
                .first()
                .and_then(|t| danger_of_machine(t))
                .map(|d| (d, object_len)),
            // Every change to a user (its configuration, its deletion, its
            // API tokens and SSH keys) changes who may do what.
            Object::User(_) if unsafe_method => {
                let index = if self.action.is_empty() {
                    object_len - 1
                } else {
                    object_len
                };
                Some((SECURITY_CONFIG, index))
            }
            _ => None,
        }
    }

    /// Where `descriptorByName/jenkins.security.ApiTokenProperty` appears
    /// in [`Binding::path`], below any object (its methods take the user
    /// from the path): the index of the descriptor's name.
    fn api_token_segment(&self) -> Option<usize> {
        let in_object = api_token_in_object(&self.object);
        let in_action = || {
            self.action
                .windows(2)
                .position(|pair| {
                    matches!(pair[0].as_str(), "descriptorbyname" | "descriptor")
                        && is_api_token_descriptor(&pair[1])
                })
                .map(|i| self.object_len() + i + 1)
        };
        in_object.or_else(in_action)
    }

    /// Dangers of the object itself, for unsafe methods: a descriptor
    /// below a user changes that user (its session seed, its tokens); an
    /// administrative monitor acts on the controller (revoking other users'
    /// legacy API tokens); a credentials descriptor adds credentials.
    fn object_danger(&self, unsafe_method: bool) -> Option<Danger> {
        match &self.object {
            Object::Named(_, "descriptorbyname", name) if name.contains("credentials") => {
                Some(CREDENTIALS)
            }
            Object::Named(parent, "descriptorbyname", _)
                if unsafe_method && matches!(**parent, Object::User(_)) =>
            {
                Some(SECURITY_CONFIG)
            }
            Object::Named(_, "administrativemonitor", _) if unsafe_method => Some(SECURITY_CONFIG),
            _ => None,
        }
    }

    /// The `/whoAmI/` HTML page (not its `api/`), which old Jenkins
    /// versions print every request header on.
    pub(crate) fn is_who_am_i_page(&self) -> bool {
        matches!(self.object, Object::Root)
            && self.action.first().is_some_and(|t| t == "whoami")
            && self.action.get(1).is_none_or(|t| t != "api")
    }
}

/// How many segments [`write_object`] writes for `object`.
fn object_len(object: &Object<'_>) -> usize {
    match object {
        Object::Root => 0,
        Object::Item(full) => 2 * full.len(),
        Object::Run(full, _) => 2 * full.len() + 1,
        Object::View(owner, _) => object_len(owner) + 2,
        Object::MyViews(_) => 3,
        Object::User(_) | Object::Computer(_) => 2,
        Object::Named(parent, _, _) => object_len(parent) + 2,
    }
}

/// The index, in the written object, of an API-token descriptor's name.
fn api_token_in_object(object: &Object<'_>) -> Option<usize> {
    match object {
        Object::Named(parent, "descriptorbyname", name) if is_api_token_descriptor(name) => {
            Some(object_len(parent) + 1)
        }
        Object::Named(parent, _, _) | Object::View(parent, _) => api_token_in_object(parent),
        _ => None,
    }
}

fn write_object<'a>(object: &Object<'a>, out: &mut Vec<&'a str>) {
    match object {
        Object::Root => {}
        Object::Item(full) => {
            for name in full {
                out.push("job");
                out.push(name);
            }
        }
        Object::Run(full, run) => {
            for name in full {
                out.push("job");
                out.push(name);
            }
            out.push(run);
        }
        Object::View(owner, name) => {
            write_object(owner, out);
            out.push("view");
            out.push(name);
        }
        Object::MyViews(user) => out.extend(["user", user, "my-views"]),
        Object::User(user) => out.extend(["user", user]),
        Object::Computer(name) => out.extend(["computer", name]),
        Object::Named(parent, kind, name) => {
            write_object(parent, out);
            out.push(kind);
            out.push(name);
        }
    }
}

/// A path for messages and logs: `/`-joined, with every character that
/// could end a log line or fool a terminal (controls, line and paragraph
/// separators, bidirectional overrides) percent-encoded, so that a client's
/// `/script/%0aFORGED` can never start a line of its own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Printable<'a>(pub(crate) &'a [&'a str]);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("/");
        }
        for segment in self.0 {
            f.write_str("/")?;
            write_escaped(f, segment)?;
        }
        Ok(())
    }
}

/// Writes `text` with the characters [`Printable`] names percent-encoded.
pub(crate) fn write_escaped(f: &mut impl fmt::Write, text: &str) -> fmt::Result {
    for c in text.chars() {
        let unsafe_char = c.is_control()
            || matches!(
                c,
                '\u{200b}'..='\u{200f}'
                    | '\u{2028}'..='\u{202e}'
                    | '\u{2066}'..='\u{2069}'
                    | '\u{feff}'
            );
        if unsafe_char {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                write!(f, "%{byte:02X}")?;
            }
        } else {
            f.write_char(c)?;
        }
    }
    Ok(())
}

/// `text` as [`write_escaped`] writes it.
pub(crate) fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let _ = write_escaped(&mut out, text);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(path: &str) -> Vec<String> {
        path.split('/')
            .skip(1)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The canonical paths of every reading of `path`.
    fn readings(path: &str) -> Vec<String> {
        let segs = segments(path);
        resolve(&segs, "alice")
            .unwrap()
            .iter()
            .map(|b| {
                assert_eq!(b.path().len(), b.object_len() + b.action.len(), "{path}");
                Printable(&b.path()).to_string()
            })
            .collect()
    }

    #[test]
    fn aliases_resolve_to_one_canonical_path() {
        for (path, canonical) in [
            ("/job/x/build", "/job/x/build"),
            ("/manage/manage/manage/scripttext", "/scripttext"),
            ("/view/all/job/x/build", "/job/x/build"),
            ("/view/a/view/b/job/x/build", "/job/x/build"),
            ("/job/f/view/v/job/x/build", "/job/f/job/x/build"),
            ("/job/f/job/g/job/x/build", "/job/f/job/g/job/x/build"),
            ("/item/x/build", "/job/x/build"),
            ("/job/f/item/x/build", "/job/f/job/x/build"),
            ("/itembyfullname/x/build", "/job/x/build"),
            ("/me/my-views/view/all/job/x/build", "/job/x/build"),
            ("/user/bob/my-views/view/all/job/x/build", "/job/x/build"),
            ("/me/my-views/job/x/build", "/job/x/build"),
            ("/me/api/json", "/user/alice/api/json"),
            (
                "/securityrealm/user/bob/configsubmit",
                "/user/bob/configsubmit",
            ),
            ("/manage/user/bob/configsubmit", "/user/bob/configsubmit"),
            (
                "/user/bob/my-views/user/configsubmit",
                "/user/bob/configsubmit",
            ),
            (
                "/computer/(master)/scripttext",
                "/computer/(built-in)/scripttext",
            ),
            ("/node/agent-1/configure", "/computer/agent-1/configure"),
            (
                "/computer/agent-1/node/configure",
                "/computer/agent-1/configure",
            ),
            ("/computer/(built-in)/node/scripttext", "/scripttext"),
            ("/job/x/lastbuild/parent/build", "/job/x/build"),
            ("/job/f/job/x/parent/parent/job/y/build", "/job/y/build"),
            ("/job/x/1/artifact/out.txt", "/job/x/1/artifact/out.txt"),
            ("/", "/"),
        ] {
            assert_eq!(readings(path), [canonical], "{path}");
        }
    }

    /// A node the path does not name is the root (the built-in node) or
    /// some agent: both readings are kept.
    #[test]
    fn unnamed_nodes_are_read_both_ways() {
        for (path, root, agent) in [
            (
                "/job/x/lastbuilton/scripttext",
                "/scripttext",
                "/computer/*/scripttext",
            ),
            (
                "/job/x/1/builton/computer/scripttext",
                "/computer/scripttext",
                "/computer/*/scripttext",
            ),
            (
                "/job/x/lastbuild/previousbuild/builton/log",
                "/log",
                "/computer/*/log",
            ),
            (
                "/computers/0/node/job/p/build",
                "/job/p/build",
                "/computer/*/job/p/build",
            ),
            (
                "/computer/_all/1/node/job/p/build",
                "/job/p/build",
                "/computer/*/job/p/build",
            ),
        ] {
            assert_eq!(readings(path), [root, agent], "{path}");
        }
        assert_eq!(
            readings("/node/a/computer/scripttext"),
            ["/computer/a/scripttext"]
        );
        assert_eq!(
            readings("/job/x/1/executor/owner/node/job/p/build"),
            ["/job/p/build", "/computer/*/job/p/build"]
        );
        // A full name in one segment, as Stapler reads `folder%2Fjob`.
        let segs = vec![
            "itembyfullname".to_owned(),
            "f/p".to_owned(),
            "build".to_owned(),
        ];
        let b = resolve(&segs, "alice").unwrap();
        assert_eq!(b[0].path(), ["job", "f", "job", "p", "build"]);
    }

    /// A token a view does not know may be its own action or its owner's:
    /// both readings are kept.
    #[test]
    fn unknown_view_tokens_are_read_both_ways() {
        assert_eq!(
            readings("/view/all/credentials/store/system"),
            [
                "/credentials/store/system",
                "/view/all/credentials/store/system"
            ]
        );
        assert_eq!(
            readings("/job/f/view/v/credentials"),
            ["/job/f/credentials", "/job/f/view/v/credentials"]
        );
        assert_eq!(readings("/view/all/api/json"), ["/view/all/api/json"]);
    }

    fn danger(path: &str, unsafe_method: bool) -> Option<&'static str> {
        let segs = segments(path);
        let readings = resolve(&segs, "alice").unwrap();
        readings
            .iter()
            .find_map(|b| b.danger(unsafe_method))
            .map(|(d, _)| d.rule)
    }

    #[test]
    fn dangers_are_actions_not_names() {
        for (path, rule) in [
            ("/scripttext", "script-console"),
            ("/job/x/lastbuilton/script", "script-console"),
            ("/job/x/unknown-action/script", "script-console"),
            ("/view/all/cli", "cli"),
            ("/computer/agent/slave-agent.jnlp", "agent-secrets"),
            ("/computer/agent/log", "diagnostics"),
            (
                "/user/bob/descriptorbyname/jenkins.security.apitokenproperty/generatenewtoken",
                "api-tokens",
            ),
            (
                "/me/descriptor/jenkins.security.apitokenproperty/revoke",
                "api-tokens",
            ),
            ("/job/f/credentials/store/folder", "credentials"),
            ("/heapdump/heapdump.hprof", "heap-dump"),
            ("/manage/prepareshutdown/prepare", "lifecycle"),
            // Below an action the model does not follow, `node` and
            // `computer` may be getters, not names.
            ("/computers/0/node/scripttext", "script-console"),
            ("/computer/_all/0/node/eval", "script-console"),
            ("/node/agent/computer/jenkins-agent.jnlp", "agent-secrets"),
            ("/job/x/lastbuild/executor/owner/node/scripttext", "script-console"),
            // Read as the root, this is the page of an agent called
            // `scripttext`; read as an agent, its script console.
            ("/job/x/lastbuilton/computer/scripttext", "agent-secrets"),
            ("/computers/0/systeminfo", "diagnostics"),
            ("/computers/0/log", "diagnostics"),
            ("/job/x/lastbuild/previousbuild/builton/log", "diagnostics"),
            ("/job/x/y/threaddump", "diagnostics"),
            ("/me/descriptorbyname/apitokenproperty/generatenewtoken", "api-tokens"),
            ("/user/bob/descriptor/apitokenproperty/revokeallexcept", "api-tokens"),
            ("/user/bob/descriptorbyname/jenkins.security.seed.userseedproperty/renewsessionseed", "security-config"),
            ("/administrativemonitor/legacyapitoken/revokeallselected", "security-config"),
            ("/descriptor/com.cloudbees.plugins.credentials.credentialsselecthelper/resolver/x/context/jenkins/addcredentials", "credentials"),
        ] {
            assert_eq!(danger(path, true), Some(rule), "{path}");
        }
        for path in [
            "/job/script/build",
            "/job/cli/job/credentials/job/eval/build",
            "/view/script/job/heapdump/buildwithparameters",
            "/computer/cli/api/json",
            "/label/credentials/api/json",
            "/job/x/1/artifact/script",
            "/job/x/ws/credentials/restart",
            "/queue/item/5/api/json",
            "/job/x/lastbuild/log",
        ] {
            assert_eq!(danger(path, true), None, "{path}");
            assert_eq!(danger(path, false), None, "{path}");
        }
        // Users are only read; every change to one is security configuration.
        assert_eq!(danger("/user/script/api/json", false), None);
        assert_eq!(danger("/pluginmanager/api/json", false), None);
        assert_eq!(danger("/pluginmanager/install", true), Some("plugins"));
        assert_eq!(danger("/user/bob/api/json", false), None);
        assert_eq!(danger("/user/bob/api/json", true), Some("security-config"));
    }

    #[test]
    fn who_am_i_page() {
        let page = |path: &str| {
            let segs = segments(path);
            resolve(&segs, "alice")
                .unwrap()
                .iter()
                .any(Binding::is_who_am_i_page)
        };
        assert!(page("/whoami"));
        assert!(page("/manage/whoami/"));
        assert!(page("/view/all/whoami"));
        assert!(!page("/whoami/api/json"));
        assert!(!page("/job/whoami"));
    }

    /// Each view token that its owner also knows adds a reading; a path
    /// with more than the cap is refused whole.
    #[test]
    fn too_many_readings_are_refused() {
        let segs = segments(&"/view/v/manage".repeat(10));
        assert_eq!(resolve(&segs, "alice").unwrap().len(), 11);
        let segs = segments(&"/view/v/manage".repeat(20));
        assert!(resolve(&segs, "alice").is_none());
    }

    #[test]
    fn printable_escapes_line_breaks_and_controls() {
        let text = Printable(&["script", "\nFORGED\r", "\u{202e}x", "é"]).to_string();
        assert_eq!(text, "/script/%0AFORGED%0D/%E2%80%AEx/é");
        assert!(!text.contains('\n'));
    }
}
