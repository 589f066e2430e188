//! Resource policies: IAM policy documents attached to a stream or consumer,
//! and the access decision they make for a signed request.
//!
//! Identities are accounts: a request is signed by one account's key, so a
//! principal matches when it names that account (`"123456789012"` or
//! `"arn:aws:iam::123456789012:root"`) or is `"*"`. Documents that this
//! server could not evaluate faithfully (conditions, `Not*` elements, IAM
//! users and roles as principals) are rejected when they are put rather than
//! half-applied later.

use serde_json::{Map, Value};
use shardlog_stream::Engine;

use crate::error::ApiError;

/// Why a policy document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("Policy is not valid JSON: {0}")]
    Json(String),
    #[error("Policy must be a JSON object with a Statement.")]
    NotADocument,
    #[error("Policy Version must be \"2012-10-17\" or \"2008-10-17\", got {0}.")]
    Version(String),
    #[error("Policy element {0} is not supported.")]
    UnknownElement(String),
    #[error("Statement {index}: {message}")]
    Statement { index: usize, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// What a policy says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A statement denies it: nothing else can allow it.
    Deny,
    /// A statement allows it and none denies it.
    Allow,
    /// No statement is about this principal, action and resource.
    NotApplicable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Principals {
    Anyone,
    Accounts(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    effect: Effect,
    principals: Principals,
    /// Lower-cased action patterns (`kinesis:get*`): IAM actions are
    /// case-insensitive.
    actions: Vec<String>,
    resources: Vec<String>,
}

/// A validated policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    statements: Vec<Statement>,
}

/// `*` matches any run of characters and `?` any one character; everything
/// else matches itself.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was and the text position it was tried against,
    // for backtracking: linear in practice, never exponential.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn strings(v: &Value, what: &str) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{what} must be a string or a list of strings."))
            })
            .collect(),
        _ => Err(format!("{what} must be a string or a non-empty list of strings.")),
    }
}

/// The account a principal string names.
fn principal_account(p: &str) -> Result<String, String> {
    let is_account = |s: &str| s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit());
    if is_account(p) {
        return Ok(p.to_string());
    }
    if let Some(rest) = p.strip_prefix("arn:aws:iam::") {
        if let Some((account, "root")) = rest.split_once(':') {
            if is_account(account) {
                return Ok(account.to_string());
            }
        }
    }
    Err(format!(
        "Principal {p:?} is not supported: this server authenticates accounts, so principals are \"*\", an account id such as \"123456789012\" or \"arn:aws:iam::123456789012:root\"."
    ))
}

fn principals(v: &Value) -> Result<Principals, String> {
    if v.as_str() == Some("*") {
        return Ok(Principals::Anyone);
    }
    let Some(obj) = v.as_object() else {
        return Err("Principal must be \"*\" or an object with an AWS member.".into());
    };
    if let Some(k) = obj.keys().find(|k| *k != "AWS") {
        return Err(format!(
            "Principal type {k:?} is not supported; only AWS account principals are."
        ));
    }
    let Some(aws) = obj.get("AWS") else {
        return Err("Principal must have an AWS member.".into());
    };
    let list = strings(aws, "Principal.AWS")?;
    if list.iter().any(|p| p == "*") {
        return Ok(Principals::Anyone);
    }
    Ok(Principals::Accounts(
        list.iter()
            .map(|p| principal_account(p))
            .collect::<Result<_, _>>()?,
    ))
}

fn statement(v: &Value) -> Result<Statement, String> {
    let Some(obj) = v.as_object() else {
        return Err("a statement must be a JSON object.".into());
    };
    for k in obj.keys() {
        match k.as_str() {
            "Sid" | "Effect" | "Principal" | "Action" | "Resource" => {}
            // Conditions cannot be evaluated here; accepting one and
            // ignoring it would grant more than its author meant.
            "Condition" => return Err("Condition is not supported.".into()),
            "NotPrincipal" | "NotAction" | "NotResource" => return Err(format!("{k} is not supported.")),
            other => return Err(format!("unknown element {other}.")),
        }
    }
    if let Some(sid) = obj.get("Sid") {
        if !sid.is_string() {
            return Err("Sid must be a string.".into());
        }
    }
    let effect = match obj.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        _ => return Err("Effect must be \"Allow\" or \"Deny\".".into()),
    };
    let principals = principals(obj.get("Principal").ok_or("Principal is required.")?)?;
    let actions = strings(obj.get("Action").ok_or("Action is required.")?, "Action")?;
    for a in &actions {
        let ok = a == "*"
            || a.len() > "kinesis:".len() && a.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("kinesis:"));
        if !ok {
            return Err(format!(
                "Action {a:?} is not a Kinesis action (kinesis:NAME, wildcards allowed)."
            ));
        }
    }
    let resources = strings(obj.get("Resource").ok_or("Resource is required.")?, "Resource")?;
    for r in &resources {
        if r != "*" && !r.starts_with("arn:") {
            return Err(format!("Resource {r:?} is not an ARN or \"*\"."));
        }
    }
    Ok(Statement {
        effect,
        principals,
        actions: actions.iter().map(|a| a.to_ascii_lowercase()).collect(),
        resources,
    })
}

impl Policy {
    /// Parses and validates a policy document.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let doc: Value = serde_json::from_str(text).map_err(|e| PolicyError::Json(e.to_string()))?;
        let Some(obj) = doc.as_object() else {
            return Err(PolicyError::NotADocument);
        };
        Policy::from_object(obj)
    }

    fn from_object(obj: &Map<String, Value>) -> Result<Policy, PolicyError> {
        for k in obj.keys() {
            if !["Version", "Id", "Statement"].contains(&k.as_str()) {
                return Err(PolicyError::UnknownElement(k.clone()));
            }
        }
        match obj.get("Version") {
            None => {}
            Some(Value::String(v)) if v == "2012-10-17" || v == "2008-10-17" => {}
            Some(v) => return Err(PolicyError::Version(v.to_string())),
        }
        let list: Vec<&Value> = match obj.get("Statement") {
            Some(Value::Array(items)) if !items.is_empty() => items.iter().collect(),
            Some(v @ Value::Object(_)) => vec![v],
            _ => return Err(PolicyError::NotADocument),
        };
        let statements = list
            .into_iter()
            .enumerate()
            .map(|(index, v)| statement(v).map_err(|message| PolicyError::Statement { index, message }))
            .collect::<Result<_, _>>()?;
        Ok(Policy { statements })
    }

    /// What this policy says about `account` doing `action` (`kinesis:Name`)
    /// on the resource `arn`.
    pub fn decide(&self, account: &str, action: &str, arn: &str) -> Decision {
        let action = action.to_ascii_lowercase();
        let mut decision = Decision::NotApplicable;
        for s in &self.statements {
            let principal = match &s.principals {
                Principals::Anyone => true,
                Principals::Accounts(list) => list.iter().any(|a| a == account),
            };
            let applies = principal
                && s.actions.iter().any(|a| wildcard_match(a, &action))
                && s.resources.iter().any(|r| wildcard_match(r, arn));
            match (applies, s.effect) {
                (true, Effect::Deny) => return Decision::Deny,
                (true, Effect::Allow) => decision = Decision::Allow,
                (false, _) => {}
            }
        }
        decision
    }
}

/// Where a policy is kept: a setting of the stream, for the stream itself
/// or for one of its consumers.
pub(crate) fn policy_setting_key(consumer: Option<&str>) -> String {
    match consumer {
        None => "Policy".to_string(),
        Some(c) => format!("ConsumerPolicy/{c}"),
    }
}

/// The resource a request acts on, as its policies see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    owner: String,
    arn: String,
    stream: String,
    consumer: Option<String>,
}

/// Parses `arn:aws:kinesis:REGION:ACCOUNT:stream/NAME[/consumer/NAME:TS]`.
fn parse_kinesis_arn(arn: &str) -> Option<Target> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" || parts[2] != "kinesis" {
        return None;
    }
    let rest = parts[5].strip_prefix("stream/")?;
    let (stream, consumer) = match rest.split_once("/consumer/") {
        Some((s, tail)) => (s, Some(tail.rsplit_once(':').map(|(c, _)| c).unwrap_or(tail))),
        None => (rest, None),
    };
    Some(Target {
        owner: parts[4].to_string(),
        arn: arn.to_string(),
        stream: stream.to_string(),
        consumer: consumer.map(str::to_string),
    })
}

/// The operations that manage a resource's policy: only its owner may call
/// them, whatever a policy says, as on AWS.
const POLICY_OPERATIONS: [&str; 3] = ["PutResourcePolicy", "GetResourcePolicy", "DeleteResourcePolicy"];

fn access_denied(caller: &str, action: &str, arn: &str, why: &str) -> ApiError {
    ApiError::new(
        "AccessDeniedException",
        format!("User: arn:aws:iam::{caller}:root is not authorized to perform: {action} on resource: {arn} {why}"),
    )
}

/// The policies of a target, as stored; missing streams have none.
fn policies_of(engine: &Engine, t: &Target) -> Vec<Policy> {
    let mut keys = vec![policy_setting_key(None)];
    if let Some(c) = &t.consumer {
        keys.push(policy_setting_key(Some(c)));
    }
    keys.iter()
        .filter_map(|k| engine.stream_setting(&t.stream, k).ok().flatten())
        .filter_map(|v| {
            let text = v.as_str()?;
            match Policy::parse(text) {
                Ok(p) => Some(p),
                Err(e) => {
                    // Only documents stored before policies were validated
                    // can fail here; they grant nothing.
                    tracing::warn!(stream = %t.stream, error = %e, "stored resource policy ignored");
                    None
                }
            }
        })
        .collect()
}

/// Decides whether the account `caller`, authenticated for `region`, may
/// run the Kinesis operation `op` with request `v`, and answers the engine
/// to run it against: the caller's own, or the owner's for a request that
/// names another account's stream or consumer by ARN and is allowed by
/// that resource's policy. An explicit Deny stops even the owner.
///
/// `account_known` says whether an account has keys: scopes of accounts
/// without any are not opened on a caller's say-so.
pub(crate) fn authorize(
    root: &Engine,
    caller: &str,
    region: &str,
    op: &str,
    v: &Value,
    account_known: impl Fn(&str) -> bool,
) -> Result<Engine, ApiError> {
    let own = root.for_scope(caller, region)?;
    let action = format!("kinesis:{op}");
    let named = ["ConsumerARN", "StreamARN", "ResourceARN"]
        .iter()
        .find_map(|m| v.get(*m).and_then(Value::as_str).and_then(parse_kinesis_arn));
    let by_name = || -> Option<Target> {
        let stream = match v.get("StreamName").and_then(Value::as_str) {
            Some(s) => s.to_string(),
            // A read names its stream through the iterator only.
            None if op == "GetRecords" => own
                .iterator_stream(v.get("ShardIterator").and_then(Value::as_str)?)
                .ok()?,
            None => return None,
        };
        Some(Target {
            owner: caller.to_string(),
            arn: format!("arn:aws:kinesis:{region}:{caller}:stream/{stream}"),
            stream,
            consumer: None,
        })
    };
    let by_arn = named.is_some();
    let Some(target) = named.or_else(by_name) else {
        return Ok(own);
    };
    let cross = target.owner != caller;
    if cross
        && (POLICY_OPERATIONS.contains(&op)
            || !account_known(&target.owner) && target.owner != root.account_id())
    {
        return Err(access_denied(
            caller,
            &action,
            &target.arn,
            &format!("because no resource-based policy allows the {action} action"),
        ));
    }
    let engine = if cross {
        root.for_scope(&target.owner, region)?
    } else {
        own
    };
    let mut allowed = false;
    for p in policies_of(&engine, &target) {
        match p.decide(caller, &action, &target.arn) {
            Decision::Deny => {
                return Err(access_denied(
                    caller,
                    &action,
                    &target.arn,
                    "with an explicit deny in a resource-based policy",
                ))
            }
            Decision::Allow => allowed = true,
            Decision::NotApplicable => {}
        }
    }
    if cross && !allowed {
        return Err(access_denied(
            caller,
            &action,
            &target.arn,
            &format!("because no resource-based policy allows the {action} action"),
        ));
    }
    // A read that names its stream by ARN must use an iterator of that
    // stream: otherwise a grant on one stream would open every stream whose
    // iterator the caller holds.
    if op == "GetRecords" && by_arn {
        if let Some(it) = v.get("ShardIterator").and_then(Value::as_str) {
            let stream = engine.iterator_stream(it)?;
            if stream != target.stream {
                return Err(ApiError::invalid(format!(
                    "The shard iterator is for stream {stream}, not for {}.",
                    target.arn
                )));
            }
        }
    }
    Ok(engine)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:kinesis:us-east-1:111111111111:stream/orders";

    fn doc(statements: Value) -> String {
        serde_json::json!({"Version": "2012-10-17", "Statement": statements}).to_string()
    }

    #[test]
    fn wildcards_match_runs_and_single_characters() {
        assert!(wildcard_match("kinesis:get*", "kinesis:getrecords"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match(
            "arn:aws:kinesis:*:111111111111:stream/ord?rs",
            ARN
        ));
        assert!(!wildcard_match("arn:aws:kinesis:*:222222222222:stream/*", ARN));
        assert!(!wildcard_match("kinesis:get", "kinesis:getrecords"));
        assert!(wildcard_match("a*b*c", "aXXbYYbc"));
        assert!(!wildcard_match("a*b*c", "aXXbYYb"));
    }

    #[test]
    fn account_principals_in_every_spelling_match_and_deny_wins() {
        let p = Policy::parse(&doc(serde_json::json!([
            {"Sid": "a", "Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::222222222222:root", "333333333333"]},
             "Action": ["kinesis:Get*", "kinesis:DescribeStreamSummary"], "Resource": ARN},
            {"Effect": "Deny", "Principal": {"AWS": "333333333333"}, "Action": "kinesis:GetRecords", "Resource": "*"}
        ])))
        .unwrap();
        assert_eq!(
            p.decide("222222222222", "kinesis:GetRecords", ARN),
            Decision::Allow
        );
        assert_eq!(
            p.decide("222222222222", "kinesis:getshardIterator", ARN),
            Decision::Allow
        );
        assert_eq!(
            p.decide("222222222222", "kinesis:PutRecord", ARN),
            Decision::NotApplicable
        );
        assert_eq!(
            p.decide("333333333333", "kinesis:GetRecords", ARN),
            Decision::Deny
        );
        assert_eq!(
            p.decide("333333333333", "kinesis:GetShardIterator", ARN),
            Decision::Allow
        );
        assert_eq!(
            p.decide("444444444444", "kinesis:GetRecords", ARN),
            Decision::NotApplicable
        );
        assert_eq!(
            p.decide(
                "222222222222",
                "kinesis:GetRecords",
                "arn:aws:kinesis:us-east-1:111111111111:stream/other"
            ),
            Decision::NotApplicable
        );
    }

    #[test]
    fn a_single_statement_object_and_star_principals_are_accepted() {
        let text = serde_json::json!({"Statement": {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}})
            .to_string();
        let p = Policy::parse(&text).unwrap();
        assert_eq!(
            p.decide("999999999999", "kinesis:PutRecord", ARN),
            Decision::Allow
        );
    }

    #[test]
    fn documents_that_cannot_be_evaluated_faithfully_are_refused() {
        let base = serde_json::json!({"Effect": "Allow", "Principal": {"AWS": "222222222222"}, "Action": "kinesis:*", "Resource": ARN});
        let with = |k: &str, v: Value| {
            let mut s = base.clone();
            s[k] = v;
            doc(serde_json::json!([s]))
        };
        let cases = [
            ("not json".to_string(), "not valid JSON"),
            ("[]".to_string(), "JSON object"),
            (
                serde_json::json!({"Version": "2020-01-01", "Statement": [base]}).to_string(),
                "Version",
            ),
            (
                with(
                    "Condition",
                    serde_json::json!({"Bool": {"aws:SecureTransport": "true"}}),
                ),
                "Condition",
            ),
            (
                with("NotAction", serde_json::json!("kinesis:PutRecord")),
                "NotAction",
            ),
            (with("Effect", serde_json::json!("Maybe")), "Effect"),
            (
                with(
                    "Principal",
                    serde_json::json!({"AWS": "arn:aws:iam::222222222222:role/r"}),
                ),
                "Principal",
            ),
            (
                with(
                    "Principal",
                    serde_json::json!({"Service": "lambda.amazonaws.com"}),
                ),
                "Service",
            ),
            (
                with("Action", serde_json::json!("s3:GetObject")),
                "Kinesis action",
            ),
            (with("Resource", serde_json::json!([])), "Resource"),
            (doc(serde_json::json!([])), "Statement"),
        ];
        for (text, needle) in cases {
            let e = Policy::parse(&text).expect_err(&text).to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn arns_of_streams_and_consumers_parse() {
        let t = parse_kinesis_arn("arn:aws:kinesis:us-east-1:111111111111:stream/s/consumer/c:1700000000")
            .unwrap();
        assert_eq!(
            (t.owner.as_str(), t.stream.as_str(), t.consumer.as_deref()),
            ("111111111111", "s", Some("c"))
        );
        assert_eq!(parse_kinesis_arn(ARN).unwrap().consumer, None);
        assert_eq!(parse_kinesis_arn("arn:aws:s3:::bucket"), None);
    }
}
