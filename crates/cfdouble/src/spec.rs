//! Runtime interpretation of the OpenAPI 3.0 document: routing, parameters,
//! security requirements and request bodies.

use super::schema::{Mode, Validator};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub struct Spec {
    pub doc: Value,
    routes: Vec<Route>,
}

struct Route {
    template: String,
    segs: Vec<Seg>,
}

enum Seg {
    Lit(String),
    Param(String),
}

/// What the HTTP layer hands to the validator.
pub struct ReqView<'r> {
    /// Upper-case method.
    pub method: &'r str,
    /// Path relative to the API base (e.g. `/zones/abc/dns_records`), still percent-encoded.
    pub path: &'r str,
    pub query: Option<&'r str>,
    /// Header lookup by lower-case name.
    pub header: &'r dyn Fn(&str) -> Option<String>,
    pub body: &'r [u8],
}

/// A credential found in the request that satisfies a security scheme's shape.
#[derive(Clone, Debug)]
pub enum Cred {
    Bearer(String),
    /// apiKey in a header: (lower-case header name, value).
    Header(String, String),
    /// A scheme the double cannot check (never valid).
    Other,
}

/// Why the request is rejected before reaching the simulated API.
#[derive(Debug)]
pub enum Reject {
    NoRoute,
    MethodNotAllowed,
    /// No security requirement of the operation is satisfied (shape-wise).
    NoCredentials,
    BadPath,
    BadQuery,
    BadBody,
}

#[derive(Default)]
pub struct Checked {
    pub template: String,
    pub path_params: BTreeMap<String, String>,
    /// Query parameters after coercion to their schema types.
    pub query: BTreeMap<String, Value>,
    pub body: Option<Value>,
    /// Each alternative security requirement satisfied shape-wise, as credential lists.
    pub security: Vec<Vec<Cred>>,
    /// True when the operation declares no security at all (or an empty requirement).
    pub anonymous_ok: bool,
    pub violations: Vec<String>,
    pub reject: Option<Reject>,
}

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

impl Spec {
    pub fn load(doc: Value) -> Result<Spec, String> {
        let paths = doc
            .get("paths")
            .and_then(Value::as_object)
            .ok_or("OpenAPI document has no 'paths' object")?;
        let mut routes = Vec::new();
        for template in paths.keys() {
            let segs = template
                .trim_start_matches('/')
                .split('/')
                .map(|s| {
                    if s.starts_with('{') && s.ends_with('}') && s.len() > 2 {
                        Seg::Param(s[1..s.len() - 1].to_string())
                    } else {
                        Seg::Lit(s.to_string())
                    }
                })
                .collect();
            routes.push(Route {
                template: template.clone(),
                segs,
            });
        }
        Ok(Spec { doc, routes })
    }

    fn validator(&self, request: bool, reject_undeclared: bool) -> Validator<'_> {
        Validator::new(
            &self.doc,
            Mode {
                request,
                reject_undeclared,
            },
        )
    }

    /// The operation object for (template, lower-case method).
    pub fn operation(&self, template: &str, method: &str) -> Option<&Value> {
        self.doc.get("paths")?.get(template)?.get(method)
    }

    /// Validate a response body against the declared response schema for `status`
    /// (exact code, then `4XX`-style range, then `default`). Returns problems.
    pub fn check_response(&self, template: &str, method: &str, status: u16, body: &Value) -> Vec<String> {
        let Some(op) = self.operation(template, method) else {
            return vec![];
        };
        let Some(responses) = op.get("responses") else {
            return vec![];
        };
        let range = format!("{}XX", status / 100);
        let resp = responses
            .get(status.to_string())
            .or_else(|| responses.get(&range))
            .or_else(|| responses.get("default"));
        let Some(resp) = resp else {
            return vec![format!(
                "status {status} is not declared for {} {template}",
                method.to_uppercase()
            )];
        };
        let v = self.validator(false, false);
        let Ok(resp) = v.resolve(resp) else {
            return vec!["unresolvable response $ref".into()];
        };
        match resp
            .get("content")
            .and_then(|c| c.get("application/json"))
            .and_then(|m| m.get("schema"))
        {
            Some(schema) => v.validate(schema, body, ""),
            None => vec![],
        }
    }

    pub fn check(&self, req: &ReqView<'_>, reject_undeclared: bool) -> Checked {
        let mut out = Checked::default();
        let method = req.method.to_ascii_lowercase();

        // ---- routing -------------------------------------------------------
        let Some(raw_segs) = req.path.strip_prefix('/').map(|p| p.split('/').collect::<Vec<_>>()) else {
            out.violations.push("path does not start with '/'".into());
            out.reject = Some(Reject::NoRoute);
            return out;
        };
        let mut matches: Vec<(&Route, usize)> = self
            .routes
            .iter()
            .filter(|r| {
                r.segs.len() == raw_segs.len()
                    && r.segs.iter().zip(&raw_segs).all(|(s, raw)| match s {
                        Seg::Lit(l) => l == raw,
                        Seg::Param(_) => !raw.is_empty(),
                    })
            })
            .map(|r| (r, r.segs.iter().filter(|s| matches!(s, Seg::Lit(_))).count()))
            .collect();
        if matches.is_empty() {
            out.violations.push("no path in the OpenAPI document matches".into());
            out.reject = Some(Reject::NoRoute);
            return out;
        }
        matches.sort_by_key(|m| std::cmp::Reverse(m.1));
        let chosen = matches
            .iter()
            .find(|(r, _)| self.operation(&r.template, &method).is_some());
        let Some((route, _)) = chosen else {
            let allowed: Vec<String> = matches
                .iter()
                .flat_map(|(r, _)| {
                    METHODS
                        .iter()
                        .filter(|m| self.operation(&r.template, m).is_some())
                        .map(|m| m.to_uppercase())
                })
                .collect();
            out.violations.push(format!(
                "method {} is not declared for this path (declared: {})",
                req.method,
                allowed.join(", ")
            ));
            out.reject = Some(Reject::MethodNotAllowed);
            return out;
        };
        out.template = route.template.clone();
        let op = self.operation(&route.template, &method).unwrap_or(&Value::Null);
        let path_item = self
            .doc
            .get("paths")
            .and_then(|p| p.get(&route.template))
            .unwrap_or(&Value::Null);

        // ---- security ----------------------------------------------------------
        self.check_security(op, req, &mut out);
        if out.reject.is_some() {
            return out;
        }

        // ---- parameters ----------------------------------------------------------
        let params = self.parameters(path_item, op, &mut out.violations);
        let v = self.validator(true, reject_undeclared);
        let mut path_bad = false;
        for (seg, raw) in route.segs.iter().zip(&raw_segs) {
            if let Seg::Param(name) = seg {
                let Some(val) = percent_decode(raw, false) else {
                    out.violations
                        .push(format!("path parameter '{name}': invalid percent-encoding"));
                    path_bad = true;
                    continue;
                };
                match params.iter().find(|p| p.name == *name && p.location == "path") {
                    None => {
                        out.violations
                            .push(format!("path parameter '{name}' is not declared for this operation"));
                        path_bad = true;
                    }
                    Some(p) => {
                        if let Err(e) = coerce_and_validate(&v, p.schema, &val, &format!("path parameter '{name}'")) {
                            out.violations.extend(e);
                            path_bad = true;
                        }
                    }
                }
                out.path_params.insert(name.clone(), val);
            }
        }
        if path_bad {
            out.reject = Some(Reject::BadPath);
            return out;
        }

        let before = out.violations.len();
        self.check_query(&v, &params, req.query, &mut out);
        for p in params.iter().filter(|p| p.location == "header") {
            let val = (req.header)(&p.name.to_ascii_lowercase());
            match val {
                None if p.required => out.violations.push(format!("missing required header '{}'", p.name)),
                None => {}
                Some(val) => {
                    if let Err(e) = coerce_and_validate(&v, p.schema, &val, &format!("header '{}'", p.name)) {
                        out.violations.extend(e);
                    }
                }
            }
        }
        if out.violations.len() > before {
            out.reject = Some(Reject::BadQuery);
            return out;
        }

        // ---- body -----------------------------------------------------------------
        self.check_body(&v, op, req, &mut out);
        out
    }

    fn check_security(&self, op: &Value, req: &ReqView<'_>, out: &mut Checked) {
        let reqs = op.get("security").or_else(|| self.doc.get("security"));
        let Some(Value::Array(reqs)) = reqs else {
            out.anonymous_ok = true;
            return;
        };
        if reqs.is_empty() {
            out.anonymous_ok = true;
            return;
        }
        let schemes = self
            .doc
            .pointer("/components/securitySchemes")
            .and_then(Value::as_object);
        let mut described = Vec::new();
        for requirement in reqs {
            let Some(requirement) = requirement.as_object() else {
                continue;
            };
            if requirement.is_empty() {
                out.anonymous_ok = true;
                continue;
            }
            let mut creds = Vec::new();
            let mut names = Vec::new();
            let mut all = true;
            for name in requirement.keys() {
                let scheme = schemes.and_then(|s| s.get(name));
                let cred = scheme.and_then(|s| find_credential(s, req));
                names.push(describe_scheme(name, scheme));
                match cred {
                    Some(c) => creds.push(c),
                    None => all = false,
                }
            }
            described.push(names.join(" + "));
            if all {
                out.security.push(creds);
            }
        }
        if out.security.is_empty() && !out.anonymous_ok {
            out.violations.push(format!(
                "no security requirement satisfied; the operation accepts: {}",
                described.join(" OR ")
            ));
            out.reject = Some(Reject::NoCredentials);
        }
    }

    fn parameters<'s>(&'s self, path_item: &'s Value, op: &'s Value, errs: &mut Vec<String>) -> Vec<Param<'s>> {
        let v = self.validator(true, false);
        let mut out: Vec<Param<'s>> = Vec::new();
        for list in [path_item.get("parameters"), op.get("parameters")]
            .into_iter()
            .flatten()
        {
            let Some(list) = list.as_array() else {
                continue;
            };
            for p in list {
                let p = match v.resolve(p) {
                    Ok(p) => p,
                    Err(e) => {
                        errs.push(format!("spec problem: {e}"));
                        continue;
                    }
                };
                let (Some(name), Some(location)) = (
                    p.get("name").and_then(Value::as_str),
                    p.get("in").and_then(Value::as_str),
                ) else {
                    continue;
                };
                let param = Param {
                    name: name.to_string(),
                    location: location.to_string(),
                    required: p.get("required").and_then(Value::as_bool).unwrap_or(location == "path"),
                    schema: p.get("schema").unwrap_or(&EMPTY),
                    style: p.get("style").and_then(Value::as_str).unwrap_or("form").to_string(),
                };
                // Operation-level parameters override path-level ones.
                out.retain(|q| !(q.name == param.name && q.location == param.location));
                out.push(param);
            }
        }
        out
    }

    fn check_query(&self, v: &Validator<'_>, params: &[Param<'_>], query: Option<&str>, out: &mut Checked) {
        let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut objects: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for piece in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
            let (k, val) = piece.split_once('=').unwrap_or((piece, ""));
            let (Some(k), Some(val)) = (percent_decode(k, true), percent_decode(val, true)) else {
                out.violations
                    .push(format!("query: invalid percent-encoding in {piece:?}"));
                continue;
            };
            let declared = |n: &str| params.iter().find(|p| p.location == "query" && p.name == n);
            if declared(&k).is_some() {
                seen.entry(k).or_default().push(val);
                continue;
            }
            // deepObject `a[b]=` or dotted `a.b=` keys for declared object parameters.
            let sub = if let Some((a, rest)) = k.split_once('[') {
                rest.strip_suffix(']')
                    .filter(|b| declared(a).is_some_and(|p| p.style == "deepObject") && !b.is_empty())
                    .map(|b| (a.to_string(), b.to_string()))
            } else if let Some((a, b)) = k.split_once('.') {
                declared(a)
                    .filter(|p| p.style != "deepObject" && v.candidate_types(p.schema).iter().any(|t| t == "object"))
                    .map(|_| (a.to_string(), b.to_string()))
            } else {
                None
            };
            match sub {
                Some((a, b)) => {
                    let p = declared(&a).map(|p| p.schema).unwrap_or(&EMPTY);
                    let prop_schema = v
                        .resolve(p)
                        .ok()
                        .and_then(|s| s.get("properties"))
                        .and_then(|ps| ps.get(&b))
                        .unwrap_or(&EMPTY);
                    let coerced = coerce(v, prop_schema, &val);
                    let obj = objects.entry(a).or_default();
                    if obj.insert(b.clone(), coerced).is_some() {
                        out.violations
                            .push(format!("query: parameter '{k}' given more than once"));
                    }
                }
                None => out
                    .violations
                    .push(format!("query: parameter '{k}' is not declared for this operation")),
            }
        }
        for p in params.iter().filter(|p| p.location == "query") {
            if let Some(obj) = objects.remove(&p.name) {
                let value = Value::Object(obj);
                let errs = v.validate(p.schema, &value, "");
                out.violations
                    .extend(errs.into_iter().map(|e| format!("query parameter '{}': {e}", p.name)));
                out.query.insert(p.name.clone(), value);
                continue;
            }
            let Some(vals) = seen.remove(&p.name) else {
                if p.required {
                    out.violations
                        .push(format!("query: missing required parameter '{}'", p.name));
                }
                continue;
            };
            let label = format!("query parameter '{}'", p.name);
            let is_array = v.candidate_types(p.schema).iter().any(|t| t == "array");
            if is_array {
                let raw: Vec<String> = if vals.len() == 1 && p.style == "form" && vals[0].contains(',') {
                    vals[0].split(',').map(str::to_string).collect()
                } else {
                    vals
                };
                let item = v.resolve(p.schema).ok().and_then(|s| s.get("items")).unwrap_or(&EMPTY);
                let arr = Value::Array(raw.iter().map(|r| coerce(v, item, r)).collect());
                let errs = v.validate(p.schema, &arr, "");
                out.violations.extend(errs.into_iter().map(|e| format!("{label}: {e}")));
                out.query.insert(p.name.clone(), arr);
                continue;
            }
            if vals.len() > 1 {
                out.violations
                    .push(format!("{label}: given {} times but is not an array", vals.len()));
            }
            match coerce_and_validate(v, p.schema, &vals[0], &label) {
                Ok(val) => {
                    out.query.insert(p.name.clone(), val);
                }
                Err(e) => out.violations.extend(e),
            }
        }
    }

    fn check_body(&self, v: &Validator<'_>, op: &Value, req: &ReqView<'_>, out: &mut Checked) {
        let rb = op.get("requestBody").map(|rb| v.resolve(rb));
        let rb = match rb {
            None => None,
            Some(Ok(rb)) => Some(rb),
            Some(Err(e)) => {
                out.violations.push(format!("spec problem: {e}"));
                None
            }
        };
        let body_present = !req.body.iter().all(u8::is_ascii_whitespace);
        let Some(rb) = rb else {
            if body_present {
                out.violations
                    .push("request body sent but the operation declares none".into());
                out.reject = Some(Reject::BadBody);
            }
            return;
        };
        let required = rb.get("required").and_then(Value::as_bool).unwrap_or(false);
        if !body_present {
            if required {
                out.violations.push("missing required request body".into());
                out.reject = Some(Reject::BadBody);
            }
            return;
        }
        let content = rb.get("content").and_then(Value::as_object);
        let ct = (req.header)("content-type").unwrap_or_default();
        let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let media = content.and_then(|c| c.iter().find(|(k, _)| k.eq_ignore_ascii_case(&essence)).map(|(_, m)| m));
        let Some(media) = media else {
            let declared: Vec<&str> = content
                .map(|c| c.keys().map(String::as_str).collect())
                .unwrap_or_default();
            out.violations.push(format!(
                "request body content-type {ct:?} is not declared (declared: {})",
                declared.join(", ")
            ));
            out.reject = Some(Reject::BadBody);
            return;
        };
        let parsed: Value = match serde_json::from_slice(req.body) {
            Ok(x) => x,
            Err(e) => {
                out.violations.push(format!("request body is not valid JSON: {e}"));
                out.reject = Some(Reject::BadBody);
                return;
            }
        };
        if let Some(schema) = media.get("schema") {
            let errs = v.validate(schema, &parsed, "");
            if !errs.is_empty() {
                out.violations
                    .extend(errs.into_iter().map(|e| format!("request body {e}")));
                out.reject = Some(Reject::BadBody);
            }
        }
        out.body = Some(parsed);
    }
}

static EMPTY: Value = Value::Null;

struct Param<'s> {
    name: String,
    location: String,
    required: bool,
    schema: &'s Value,
    style: String,
}

fn describe_scheme(name: &str, scheme: Option<&Value>) -> String {
    match scheme {
        Some(s) if s.get("type").and_then(Value::as_str) == Some("http") => {
            format!(
                "{name} (Authorization: {} ...)",
                s.get("scheme").and_then(Value::as_str).unwrap_or("?")
            )
        }
        Some(s) => format!("{name} ({})", s.get("name").and_then(Value::as_str).unwrap_or("?")),
        None => format!("{name} (undefined scheme)"),
    }
}

fn find_credential(scheme: &Value, req: &ReqView<'_>) -> Option<Cred> {
    let ty = scheme.get("type").and_then(Value::as_str)?;
    match ty {
        "http" => {
            let want = scheme.get("scheme").and_then(Value::as_str)?.to_ascii_lowercase();
            let auth = (req.header)("authorization")?;
            let (s, rest) = auth.trim().split_once(' ')?;
            let rest = rest.trim();
            if s.eq_ignore_ascii_case(&want) && !rest.is_empty() {
                Some(if want == "bearer" {
                    Cred::Bearer(rest.to_string())
                } else {
                    Cred::Other
                })
            } else {
                None
            }
        }
        "apiKey" => {
            let name = scheme.get("name").and_then(Value::as_str)?.to_ascii_lowercase();
            match scheme.get("in").and_then(Value::as_str)? {
                "header" => (req.header)(&name)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| Cred::Header(name, v)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Turn a raw string into a JSON value of the schema's type.
fn coerce(v: &Validator<'_>, schema: &Value, raw: &str) -> Value {
    let types = v.candidate_types(schema);
    for t in &types {
        if let Some(x) = coerce_as(t, raw) {
            return x;
        }
    }
    Value::String(raw.to_string())
}

fn coerce_as(t: &str, raw: &str) -> Option<Value> {
    match t {
        "string" => Some(Value::String(raw.to_string())),
        "integer" => raw.parse::<i64>().ok().map(Value::from),
        "number" => {
            if let Ok(i) = raw.parse::<i64>() {
                Some(Value::from(i))
            } else {
                raw.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
            }
        }
        "boolean" => match raw {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        _ => None,
    }
}

fn coerce_and_validate(v: &Validator<'_>, schema: &Value, raw: &str, label: &str) -> Result<Value, Vec<String>> {
    let mut types = v.candidate_types(schema);
    if types.is_empty() {
        types.push("string".into());
    }
    let mut first_err = None;
    for t in &types {
        match coerce_as(t, raw) {
            Some(val) => {
                let errs = v.validate(schema, &val, "");
                if errs.is_empty() {
                    return Ok(val);
                }
                first_err.get_or_insert(errs);
            }
            None => {
                first_err.get_or_insert(vec![format!("{raw:?} is not a valid {t}")]);
            }
        }
    }
    Err(first_err
        .unwrap_or_default()
        .into_iter()
        .map(|e| format!("{label}: {e}"))
        .collect())
}

/// Percent-decode; `plus` turns '+' into ' ' (form encoding). None on bad input.
pub fn percent_decode(s: &str, plus: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}
