//! The route table of the client port and who may call each route: one list, [`ROUTES`], that
//! the router is built from (`routes::table`), that the authorization matrix test
//! (`web/tests/routes/access_matrix.rs`) runs every caller against, and that docs/security.md
//! shows (a unit test checks the doc's table is [`markdown_table`]'s output).
//!
//! Owns the [`Rule`] of every route and the channel-level decision ([`Rule::allows`]) that the
//! channel and message handlers call before proposing anything to Raft. Must never be bypassed
//! by a `.route()` outside this list: a route without an entry is not served. The state
//! machine's apply-time checks stay the authority for what reaches the log.
//!
//! Adding a route: add one `spec!` line to [`ROUTES`] (method, path as in docs/api.md, rule,
//! handler), add its case to the matrix test's `request_for` (the test fails naming the route
//! until you do), and regenerate the table in docs/security.md (the failing unit test prints
//! it).

use axum::Router;
use axum::routing::MethodRouter;
use cluster::ChannelKind;

use super::{
    backup, ca, channels, cluster as cluster_routes, dns, file_download, files, join, messages,
    search, session, sessions, users,
};
use crate::error::ApiError;
use crate::state::AppState;

/// HTTP methods the client port uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verb {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Put => "PUT",
            Verb::Patch => "PATCH",
            Verb::Delete => "DELETE",
        }
    }
}

/// Who may call a route. Channel rules are decided on the channel named in the path, from this
/// node's fresh state; "reader" means the caller may read the channel (anyone signed in for a
/// public channel, members otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// No token needed.
    Public,
    /// No bearer token; the body carries a join token (a one-time secret an admin issued).
    JoinToken,
    /// Any signed-in user; what the answer shows is limited to the caller's own data or to
    /// what every user may see.
    AnyUser,
    /// Admins only.
    Admin,
    /// Readers of the channel.
    ChannelReader,
    /// Current members of the channel.
    ChannelMember,
    /// Members, and admins who can read the channel (a public one, or one they are in).
    MemberOrAdmin,
    /// The channel's creator and admins, either only while they can read the channel; in a DM,
    /// its members (archive, unarchive, retitle; a topic change is [`Rule::MemberOrAdmin`]).
    CreatorOrAdmin,
    /// The message's author, while a member (edit).
    AuthorMember,
    /// The message's author or an admin, either only while a member (delete).
    AuthorOrAdminMember,
    /// The member the path names (leaving), and admins (of any public or private channel:
    /// admins manage membership; a DM's members never change).
    SelfOrAdmin,
    /// Adding someone else: members and admins (of any public or private channel, as for
    /// [`Rule::SelfOrAdmin`]); nobody for a DM, whose participants are its identity.
    ManageMembers,
    /// Readers of the channel a file was posted in (the file's id names it); anyone else
    /// gets 404 `file_not_found`, as for a file that does not exist.
    FileReader,
    /// A metrics scraper: anyone, or only with `[metrics] bearer_token_file` set, a request
    /// with that token. A user's session token is never one.
    Scraper,
}

impl Rule {
    /// The rule as docs/security.md words it.
    pub fn describe(self) -> &'static str {
        match self {
            Rule::Public => "anyone, no token",
            Rule::JoinToken => "a joining node with a join token (no bearer token)",
            Rule::AnyUser => "any signed-in user",
            Rule::Admin => "admins",
            Rule::ChannelReader => {
                "readers: anyone signed in for a public channel, members otherwise"
            }
            Rule::ChannelMember => "members",
            Rule::MemberOrAdmin => "members; admins who can read the channel",
            Rule::CreatorOrAdmin => {
                "the creator and admins, while they can read the channel; in a DM its members (topic alone: members; admins who can read it)"
            }
            Rule::AuthorMember => "the message's author, while a member",
            Rule::AuthorOrAdminMember => "the message's author or an admin, while a member",
            Rule::SelfOrAdmin => "the member named (leaving); admins, except in DMs",
            Rule::ManageMembers => "members and admins; nobody in a DM",
            Rule::FileReader => "readers of the file's channel (anyone else: 404 `file_not_found`)",
            Rule::Scraper => {
                "anyone, no token; with `[metrics] bearer_token_file` only requests bearing that token (never a user session)"
            }
        }
    }

    /// Whether a caller in `a`'s position passes a channel-level rule. Rules that are not about
    /// a channel are decided by the `Auth` extractor and `require_admin` instead; for those
    /// this answers `true`.
    pub fn allows(self, a: &ChannelAccess) -> bool {
        let reader = a.kind == ChannelKind::Public || a.member;
        match self {
            Rule::Public
            | Rule::JoinToken
            | Rule::AnyUser
            | Rule::Admin
            | Rule::Scraper
            | Rule::FileReader => true,
            Rule::ChannelReader => reader,
            Rule::ChannelMember => a.member,
            Rule::MemberOrAdmin => a.member || (a.admin && reader),
            // A DM has no owner: either participant manages it.
            Rule::CreatorOrAdmin if a.kind == ChannelKind::Direct => a.member,
            Rule::CreatorOrAdmin => reader && (a.creator || a.admin),
            Rule::AuthorMember => a.member && a.own,
            Rule::AuthorOrAdminMember => a.member && (a.own || a.admin),
            Rule::SelfOrAdmin => (a.own && a.member) || (a.admin && a.kind != ChannelKind::Direct),
            Rule::ManageMembers => a.kind != ChannelKind::Direct && (a.member || a.admin),
        }
    }

    /// [`Rule::allows`] as an API answer: 403 `forbidden` naming the rule.
    pub fn check(self, channel: &str, a: &ChannelAccess) -> Result<(), ApiError> {
        if self.allows(a) {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "not allowed in channel '{channel}': this is for {}",
            self.describe()
        )))
    }
}

impl Rule {
    /// Whether being an admin can be what lets a caller through this rule: a successful
    /// change by an admin under such a rule is logged as `admin.action` (security_log).
    pub fn admin_power(self) -> bool {
        matches!(
            self,
            Rule::Admin
                | Rule::MemberOrAdmin
                | Rule::CreatorOrAdmin
                | Rule::AuthorOrAdminMember
                | Rule::SelfOrAdmin
                | Rule::ManageMembers
        )
    }
}

/// The entry of [`ROUTES`] that answers `method` on the concrete `path` (a `{param}` segment
/// matches any one segment), for the security log's audit events.
pub fn lookup(method: &str, path: &str) -> Option<&'static RouteSpec> {
    let same_shape = |pattern: &str| {
        pattern.split('/').count() == path.split('/').count()
            && pattern
                .split('/')
                .zip(path.split('/'))
                .all(|(p, s)| p == s || (p.starts_with('{') && p.ends_with('}')))
    };
    ROUTES
        .iter()
        .find(|r| r.verb.as_str() == method && same_shape(r.path))
}

/// Where a caller stands in one channel (and, for message routes, towards one message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelAccess {
    pub kind: ChannelKind,
    pub member: bool,
    pub admin: bool,
    pub creator: bool,
    /// Whether the caller wrote the message in question, or is the member the path names
    /// (`false` when the route names neither).
    pub own: bool,
}

/// One route of the client port.
pub struct RouteSpec {
    pub verb: Verb,
    /// The path as docs/api.md and the OpenAPI document write it (`{name}` for a parameter).
    pub path: &'static str,
    pub rule: Rule,
    handler: fn() -> MethodRouter<AppState>,
}

impl std::fmt::Debug for RouteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({:?})", self.verb.as_str(), self.path, self.rule)
    }
}

macro_rules! spec {
    ($verb:ident $path:literal, $rule:ident, $handler:path) => {
        RouteSpec {
            verb: Verb::$verb,
            path: $path,
            rule: Rule::$rule,
            handler: || spec!(@method $verb)($handler),
        }
    };
    (@method Get) => { axum::routing::get };
    (@method Post) => { axum::routing::post };
    (@method Put) => { axum::routing::put };
    (@method Patch) => { axum::routing::patch };
    (@method Delete) => { axum::routing::delete };
    // A route whose `MethodRouter` is built by a function (its own body limit).
    ($verb:ident $path:literal, $rule:ident, router $router:path) => {
        RouteSpec {
            verb: Verb::$verb,
            path: $path,
            rule: Rule::$rule,
            handler: $router,
        }
    };
}

/// Prefix of the versioned API; routes outside it (`/healthz`, `/readyz`) are probes.
pub const API_PREFIX: &str = "/api/v1";

/// Every route of the client port except the web client's static files (all `GET`, public, no
/// token, listed by `static_files`).
pub static ROUTES: &[RouteSpec] = &[
    // Sessions and accounts.
    spec!(Post "/api/v1/login", Public, session::login),
    spec!(Post "/api/v1/logout", AnyUser, session::logout),
    spec!(Get "/api/v1/me", AnyUser, users::me),
    spec!(Patch "/api/v1/me", AnyUser, users::update_me),
    spec!(Post "/api/v1/me/password", AnyUser, users::change_password),
    spec!(Post "/api/v1/users", Admin, users::create),
    spec!(Get "/api/v1/users", AnyUser, users::list),
    spec!(Patch "/api/v1/users/{name}", Admin, users::update),
    spec!(Post "/api/v1/users/{name}/password", Admin, users::reset_password),
    spec!(Get "/api/v1/me/sessions", AnyUser, sessions::list),
    spec!(Delete "/api/v1/me/sessions/{id}", AnyUser, sessions::end_own),
    spec!(Delete "/api/v1/users/{name}/sessions", Admin, sessions::end_all_of_user),
    // Channels.
    spec!(Post "/api/v1/dms", AnyUser, channels::start_dm),
    spec!(Post "/api/v1/channels", AnyUser, channels::create),
    spec!(Get "/api/v1/channels", AnyUser, channels::list),
    spec!(Get "/api/v1/channels/{name}", ChannelReader, channels::get),
    spec!(Patch "/api/v1/channels/{name}", CreatorOrAdmin, channels::update),
    spec!(Post "/api/v1/channels/{name}/join", ChannelReader, channels::join),
    spec!(Post "/api/v1/channels/{name}/leave", ChannelMember, channels::leave),
    spec!(Post "/api/v1/channels/{name}/read", ChannelMember, channels::mark_read),
    spec!(Put "/api/v1/channels/{name}/mute", ChannelMember, channels::mute),
    spec!(Post "/api/v1/channels/{name}/members", ManageMembers, channels::add_member),
    spec!(Delete "/api/v1/channels/{name}/members/{user}", SelfOrAdmin, channels::remove_member),
    // Messages.
    spec!(Post "/api/v1/channels/{name}/messages", ChannelMember, messages::post),
    spec!(Get "/api/v1/channels/{name}/messages", ChannelReader, messages::list),
    spec!(Patch "/api/v1/channels/{name}/messages/{seq}", AuthorMember, messages::edit),
    spec!(Delete "/api/v1/channels/{name}/messages/{seq}", AuthorOrAdminMember, messages::delete),
    spec!(Put "/api/v1/channels/{name}/messages/{seq}/reactions/{emoji}", ChannelMember, messages::react),
    spec!(Delete "/api/v1/channels/{name}/messages/{seq}/reactions/{emoji}", ChannelMember, messages::unreact),
    spec!(Put "/api/v1/channels/{name}/messages/{seq}/pin", MemberOrAdmin, messages::pin),
    spec!(Delete "/api/v1/channels/{name}/messages/{seq}/pin", MemberOrAdmin, messages::unpin),
    spec!(Get "/api/v1/channels/{name}/pins", ChannelReader, messages::pins),
    spec!(Get "/api/v1/channels/{name}/threads/{root}", ChannelReader, messages::thread),
    // Files: chunks first, then the file as a message.
    spec!(Put "/api/v1/blobs/{sha256}", AnyUser, router files::put_blob_route),
    spec!(Post "/api/v1/channels/{name}/files", ChannelMember, files::post_file),
    spec!(Get "/api/v1/files/{file_id}", FileReader, file_download::download),
    spec!(Get "/api/v1/files/{file_id}/thumbnail", FileReader, file_download::thumbnail),
    // Search: any signed-in user; the answer holds only messages of channels they can read.
    spec!(Get "/api/v1/search", AnyUser, search::search),
    // The WebSocket: the upgrade needs no token, the first frame carries it (protocol.md).
    spec!(Get "/api/v1/ws", Public, crate::ws::upgrade),
    // Cluster, DNS, CA, joining nodes.
    spec!(Get "/api/v1/cluster", Public, cluster_routes::status),
    spec!(Post "/api/v1/cluster/nodes", Admin, cluster_routes::add_node),
    spec!(Delete "/api/v1/cluster/nodes/{id}", Admin, cluster_routes::remove_node),
    spec!(Post "/api/v1/cluster/nodes/{id}/drain", Admin, cluster_routes::drain),
    spec!(Delete "/api/v1/cluster/nodes/{id}/drain", Admin, cluster_routes::undrain),
    spec!(Post "/api/v1/cluster/join-tokens", Admin, join::create_token),
    spec!(Post "/api/v1/join", JoinToken, join::join),
    spec!(Post "/api/v1/join/complete", JoinToken, join::complete),
    spec!(Get "/api/v1/dns/records", Admin, dns::list),
    spec!(Post "/api/v1/dns/records", Admin, dns::create),
    spec!(Delete "/api/v1/dns/records", Admin, dns::remove),
    spec!(Get "/api/v1/ca/root.pem", Public, ca::root_pem),
    spec!(Get "/api/v1/ca/root.crt", Public, ca::root_der),
    spec!(Get "/api/v1/ca/root.mobileconfig", Public, ca::root_mobileconfig),
    spec!(Get "/api/v1/ca/crl.pem", Public, ca::crl_pem),
    spec!(Get "/api/v1/ca/fingerprint", Public, ca::fingerprint),
    spec!(Post "/api/v1/ca/init", Admin, ca::init),
    spec!(Post "/api/v1/ca/sign", Admin, ca::sign),
    spec!(Post "/api/v1/ca/node-certs", Admin, ca::node_cert),
    spec!(Get "/api/v1/ca/certs", Admin, ca::list),
    spec!(Post "/api/v1/ca/certs/{serial}/revoke", Admin, ca::revoke),
    spec!(Post "/api/v1/ca/export-root-key", Admin, ca::export_root_key),
    spec!(Post "/api/v1/ca/renew-intermediate", Admin, ca::renew_intermediate),
    spec!(Get "/api/v1/admin/backup", Admin, backup::backup),
    spec!(Get "/api/v1/openapi.json", Public, crate::openapi::openapi_json),
    // Probes.
    spec!(Get "/healthz", Public, cluster_routes::healthz),
    spec!(Get "/readyz", Public, cluster_routes::readyz),
    // Monitoring (the Prometheus text format; not an API resource, so outside /api/v1).
    spec!(Get "/metrics", Scraper, crate::metrics::scrape),
];

/// The rule of `verb path` (`path` as written in [`ROUTES`]).
pub fn rule_of(verb: Verb, path: &str) -> Option<Rule> {
    ROUTES
        .iter()
        .find(|r| r.verb == verb && r.path == path)
        .map(|r| r.rule)
}

/// The routes under [`API_PREFIX`] (paths relative to it) and the others, each built from
/// [`ROUTES`] alone.
pub(crate) fn routers() -> (Router<AppState>, Router<AppState>) {
    let mut api = Router::new();
    let mut top = Router::new();
    for r in ROUTES {
        match r.path.strip_prefix(API_PREFIX) {
            Some(rel) => api = api.route(rel, (r.handler)()),
            None => top = top.route(r.path, (r.handler)()),
        }
    }
    (api, top)
}

/// The authorization table of docs/security.md, generated from [`ROUTES`].
pub fn markdown_table() -> String {
    let mut out = String::from("| method | path | who may call it |\n|---|---|---|\n");
    for r in ROUTES {
        out.push_str(&format!(
            "| `{}` | `{}` | {} |\n",
            r.verb.as_str(),
            r.path,
            r.rule.describe()
        ));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_route_is_listed_once() {
        let mut seen = BTreeSet::new();
        for r in ROUTES {
            assert!(seen.insert((r.verb, r.path)), "{r:?} listed twice");
        }
        // Building the router panics on an overlapping route: build it.
        let _ = routers();
    }

    /// The OpenAPI document (every handler's `#[utoipa::path]`) and the table name the same
    /// routes: a handler added to the router by any other way than [`ROUTES`] would have a
    /// path attribute without an entry here.
    #[test]
    fn the_openapi_document_and_the_table_agree() {
        let doc: serde_json::Value = serde_json::from_str(crate::openapi::json()).unwrap();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for verb in item.as_object().unwrap().keys() {
                documented.insert((verb.to_uppercase(), path.clone()));
            }
        }
        let listed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .filter(|r| r.path.starts_with(API_PREFIX))
            .map(|r| (r.verb.as_str().to_owned(), r.path.to_owned()))
            .collect();
        let documented: BTreeSet<(String, String)> = documented
            .into_iter()
            .filter(|(_, p)| p.starts_with(API_PREFIX))
            .collect();
        assert_eq!(
            listed.difference(&documented).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "routes in the table without #[utoipa::path]"
        );
        assert_eq!(
            documented.difference(&listed).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "documented routes missing from ROUTES (add a spec! line)"
        );
    }

    #[test]
    fn docs_security_md_shows_the_table() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/security.md"))
                .unwrap();
        let table = markdown_table();
        assert!(
            doc.contains(&table),
            "docs/security.md must contain the authorization table exactly as generated:\n\n{table}"
        );
    }

    fn access(
        kind: ChannelKind,
        member: bool,
        admin: bool,
        creator: bool,
        own: bool,
    ) -> ChannelAccess {
        ChannelAccess {
            kind,
            member,
            admin,
            creator,
            own,
        }
    }

    #[test]
    fn channel_rules() {
        use ChannelKind::*;
        let outsider_admin = |k| access(k, false, true, false, false);
        assert!(Rule::MemberOrAdmin.allows(&outsider_admin(Public)));
        assert!(!Rule::MemberOrAdmin.allows(&outsider_admin(Private)));
        assert!(!Rule::MemberOrAdmin.allows(&outsider_admin(Direct)));
        assert!(Rule::CreatorOrAdmin.allows(&access(Public, false, false, true, false)));
        assert!(!Rule::CreatorOrAdmin.allows(&access(Public, true, false, false, false)));
        assert!(!Rule::CreatorOrAdmin.allows(&access(Private, false, false, true, false)));
        assert!(!Rule::AuthorMember.allows(&access(Public, false, false, false, true)));
        assert!(Rule::AuthorOrAdminMember.allows(&access(Direct, true, true, false, false)));
        assert!(!Rule::AuthorOrAdminMember.allows(&outsider_admin(Public)));
        assert!(Rule::ChannelReader.allows(&access(Public, false, false, false, false)));
        assert!(!Rule::ChannelReader.allows(&access(Direct, false, true, false, false)));
    }
}
