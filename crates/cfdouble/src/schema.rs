//! A small JSON-Schema (OpenAPI 3.0 dialect) validator that interprets the
//! schema objects of the loaded OpenAPI document at runtime.
//!
//! Supported (constraining) keywords:
//! `$ref` (local `#/...` JSON pointers), `type` (string or array of strings;
//! `integer`, `number`, `string`, `boolean`, `object`, `array`, `null`),
//! `nullable`, `enum` (numbers compared numerically), `const`,
//! `allOf`, `anyOf`, `oneOf` (exactly one), `not`,
//! `properties`, `required`, `additionalProperties` (bool or schema),
//! `minProperties`, `maxProperties`,
//! `items`, `minItems`, `maxItems`, `uniqueItems`,
//! `minLength`, `maxLength` (Unicode scalar values, strings only),
//! `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum` (OAS 3.0
//! boolean form and the numeric form), `multipleOf`,
//! `format`: `ipv4`, `ipv6`, `hostname`, `date-time` (other formats ignored),
//! `readOnly` (a read-only property present in a *request* body is an error).
//!
//! Ignored keywords (annotations, or not implementable without extra crates):
//! `pattern` (no regex engine; in this document it appears only on the
//! response-only `zones_zone.name`), `discriminator` (an optimisation hint; the
//! `oneOf`/`anyOf` it decorates is still fully checked; unused in the
//! document), `writeOnly`, `default`, `deprecated`, `example(s)`, `title`,
//! `description`, `x-*` extensions, tuple-form `items`.
//! Misplaced keywords are ignored as JSON Schema prescribes (e.g. the
//! document's `minLength: 1` on the `errors` *array* does nothing).

use serde_json::{Map, Value};
use std::collections::BTreeSet;

const MAX_DEPTH: usize = 64;

/// Options for one validation run.
#[derive(Clone, Copy, Debug)]
pub struct Mode {
    /// Validating a request (enables the `readOnly` check).
    pub request: bool,
    /// Treat every object schema that declares `properties` as closed (an
    /// instance property no applicable subschema declares is an error).
    pub reject_undeclared: bool,
}

pub struct Validator<'a> {
    doc: &'a Value,
    mode: Mode,
}

/// Outcome of applying a schema at one instance location.
#[derive(Default)]
struct Eval {
    /// Property names declared by `properties` of all applicable subschemas.
    declared: BTreeSet<String>,
    /// Whether some applicable subschema had `properties`.
    saw_properties: bool,
    /// `additionalProperties` was present (so it was already enforced).
    saw_additional: bool,
}

impl Eval {
    fn merge(&mut self, o: Eval) {
        self.declared.extend(o.declared);
        self.saw_properties |= o.saw_properties;
        self.saw_additional |= o.saw_additional;
    }
}

impl<'a> Validator<'a> {
    pub fn new(doc: &'a Value, mode: Mode) -> Self {
        Validator { doc, mode }
    }

    /// Resolve a `$ref` chain starting at `schema`.
    pub fn resolve(&self, schema: &'a Value) -> Result<&'a Value, String> {
        let mut cur = schema;
        for _ in 0..MAX_DEPTH {
            match cur.get("$ref").and_then(Value::as_str) {
                None => return Ok(cur),
                Some(r) => {
                    let ptr = r
                        .strip_prefix('#')
                        .ok_or_else(|| format!("unsupported non-local $ref {r}"))?;
                    cur = self.doc.pointer(ptr).ok_or_else(|| format!("unresolvable $ref {r}"))?;
                }
            }
        }
        Err("$ref chain too deep".into())
    }

    /// Validate `v` against `schema`; returns the list of problems (empty = valid).
    pub fn validate(&self, schema: &'a Value, v: &Value, at: &str) -> Vec<String> {
        let mut errs = Vec::new();
        self.instance(schema, v, at, 0, &mut errs);
        errs
    }

    /// Types a schema may accept (through `$ref` and combinators); empty = any.
    pub fn candidate_types(&self, schema: &'a Value) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_types(schema, 0, &mut out);
        out
    }

    fn collect_types(&self, schema: &'a Value, depth: usize, out: &mut Vec<String>) {
        if depth > MAX_DEPTH {
            return;
        }
        let Ok(s) = self.resolve(schema) else { return };
        match s.get("type") {
            Some(Value::String(t)) => push_unique(out, t),
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).for_each(|t| push_unique(out, t)),
            _ => {
                for k in ["allOf", "anyOf", "oneOf"] {
                    if let Some(Value::Array(subs)) = s.get(k) {
                        for sub in subs {
                            self.collect_types(sub, depth + 1, out);
                        }
                    }
                }
            }
        }
    }

    /// Apply `schema` to an instance location and, if asked, enforce closed objects.
    fn instance(&self, schema: &'a Value, v: &Value, at: &str, depth: usize, errs: &mut Vec<String>) {
        let ev = self.apply(schema, v, at, depth, errs);
        if self.mode.reject_undeclared && ev.saw_properties && !ev.saw_additional {
            if let Value::Object(m) = v {
                for k in m.keys() {
                    if !ev.declared.contains(k) {
                        errs.push(format!("{}: property '{}' is not declared by the schema", ptr(at), k));
                    }
                }
            }
        }
    }

    fn apply(&self, schema: &'a Value, v: &Value, at: &str, depth: usize, errs: &mut Vec<String>) -> Eval {
        let mut ev = Eval::default();
        if depth > MAX_DEPTH {
            errs.push(format!("{}: schema nesting too deep (cyclic $ref?)", ptr(at)));
            return ev;
        }
        let s = match self.resolve(schema) {
            Ok(s) => s,
            Err(e) => {
                errs.push(format!("{}: {e}", ptr(at)));
                return ev;
            }
        };
        let Some(s) = s.as_object() else {
            // `true`/`false` boolean schemas (not OAS 3.0, but harmless).
            if s == &Value::Bool(false) {
                errs.push(format!("{}: no value allowed here", ptr(at)));
            }
            return ev;
        };
        let nullable = s.get("nullable").and_then(Value::as_bool).unwrap_or(false);

        // type / nullable
        if let Some(t) = s.get("type") {
            let types: Vec<&str> = match t {
                Value::String(x) => vec![x.as_str()],
                Value::Array(xs) => xs.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            let ok = (v.is_null() && nullable) || types.iter().any(|t| type_matches(t, v));
            if !types.is_empty() && !ok {
                errs.push(format!(
                    "{}: expected {}{}, got {}",
                    ptr(at),
                    types.join(" or "),
                    if nullable { " or null" } else { "" },
                    type_name(v)
                ));
                // Further keyword checks would only add noise.
                return ev;
            }
        }

        if let Some(Value::Array(options)) = s.get("enum") {
            let ok = options.iter().any(|o| json_eq(o, v)) || (v.is_null() && nullable);
            if !ok {
                errs.push(format!(
                    "{}: {} is not one of {}",
                    ptr(at),
                    v,
                    Value::Array(options.clone())
                ));
            }
        }
        if let Some(c) = s.get("const") {
            if !json_eq(c, v) {
                errs.push(format!("{}: {} is not the constant {}", ptr(at), v, c));
            }
        }

        // combinators
        if let Some(Value::Array(subs)) = s.get("allOf") {
            for sub in subs {
                ev.merge(self.apply(sub, v, at, depth + 1, errs));
            }
        }
        if let Some(Value::Array(subs)) = s.get("anyOf") {
            let mut passed = 0;
            let mut reasons = Vec::new();
            for (i, sub) in subs.iter().enumerate() {
                let mut e = Vec::new();
                let sub_ev = self.apply(sub, v, at, depth + 1, &mut e);
                if e.is_empty() {
                    passed += 1;
                    ev.merge(sub_ev);
                } else {
                    reasons.push(format!("[{i}] {}", e.join("; ")));
                }
            }
            if passed == 0 {
                errs.push(format!("{}: matches none of anyOf: {}", ptr(at), reasons.join(" | ")));
            }
        }
        if let Some(Value::Array(subs)) = s.get("oneOf") {
            let mut passed = Vec::new();
            let mut reasons = Vec::new();
            for (i, sub) in subs.iter().enumerate() {
                let mut e = Vec::new();
                let sub_ev = self.apply(sub, v, at, depth + 1, &mut e);
                if e.is_empty() {
                    passed.push(i);
                    ev.merge(sub_ev);
                } else {
                    reasons.push(format!("[{i}] {}", e.join("; ")));
                }
            }
            match passed.len() {
                1 => {}
                0 => errs.push(format!("{}: matches none of oneOf: {}", ptr(at), reasons.join(" | "))),
                _ => errs.push(format!("{}: matches more than one oneOf branch: {:?}", ptr(at), passed)),
            }
        }
        if let Some(n) = s.get("not") {
            let mut e = Vec::new();
            self.apply(n, v, at, depth + 1, &mut e);
            if e.is_empty() {
                errs.push(format!("{}: must not match the 'not' schema", ptr(at)));
            }
        }

        match v {
            Value::String(st) => self.string_checks(s, st, at, errs),
            Value::Number(_) => number_checks(s, v, at, errs),
            Value::Array(items) => self.array_checks(s, items, at, depth, errs),
            Value::Object(m) => self.object_checks(s, m, at, depth, errs, &mut ev),
            _ => {}
        }
        ev
    }

    fn string_checks(&self, s: &Map<String, Value>, st: &str, at: &str, errs: &mut Vec<String>) {
        let len = st.chars().count() as u64;
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
            if len > max {
                errs.push(format!("{}: string longer than maxLength {max} ({len})", ptr(at)));
            }
        }
        if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
            if len < min {
                errs.push(format!("{}: string shorter than minLength {min} ({len})", ptr(at)));
            }
        }
        if let Some(f) = s.get("format").and_then(Value::as_str) {
            let ok = match f {
                "ipv4" => st.parse::<std::net::Ipv4Addr>().is_ok(),
                "ipv6" => st.parse::<std::net::Ipv6Addr>().is_ok(),
                "hostname" => is_hostname(st),
                "date-time" => is_date_time(st),
                _ => true,
            };
            if !ok {
                errs.push(format!("{}: {:?} is not a valid {f}", ptr(at), st));
            }
        }
    }

    fn array_checks(&self, s: &Map<String, Value>, items: &[Value], at: &str, depth: usize, errs: &mut Vec<String>) {
        let n = items.len() as u64;
        if let Some(max) = s.get("maxItems").and_then(Value::as_u64) {
            if n > max {
                errs.push(format!("{}: more than maxItems {max} items ({n})", ptr(at)));
            }
        }
        if let Some(min) = s.get("minItems").and_then(Value::as_u64) {
            if n < min {
                errs.push(format!("{}: fewer than minItems {min} items ({n})", ptr(at)));
            }
        }
        if s.get("uniqueItems").and_then(Value::as_bool) == Some(true) {
            'outer: for i in 0..items.len() {
                for j in (i + 1)..items.len() {
                    if json_eq(&items[i], &items[j]) {
                        errs.push(format!(
                            "{}: items {i} and {j} are equal but uniqueItems is set",
                            ptr(at)
                        ));
                        break 'outer;
                    }
                }
            }
        }
        if let Some(item_schema) = s.get("items") {
            if item_schema.is_object() {
                for (i, it) in items.iter().enumerate() {
                    self.instance(item_schema, it, &format!("{at}/{i}"), depth + 1, errs);
                }
            }
        }
    }

    fn object_checks(
        &self,
        s: &'a Map<String, Value>,
        m: &Map<String, Value>,
        at: &str,
        depth: usize,
        errs: &mut Vec<String>,
        ev: &mut Eval,
    ) {
        if let Some(Value::Array(req)) = s.get("required") {
            for r in req.iter().filter_map(Value::as_str) {
                if !m.contains_key(r) {
                    errs.push(format!("{}: missing required property '{r}'", ptr(at)));
                }
            }
        }
        let n = m.len() as u64;
        if let Some(max) = s.get("maxProperties").and_then(Value::as_u64) {
            if n > max {
                errs.push(format!("{}: more than maxProperties {max}", ptr(at)));
            }
        }
        if let Some(min) = s.get("minProperties").and_then(Value::as_u64) {
            if n < min {
                errs.push(format!("{}: fewer than minProperties {min}", ptr(at)));
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        if let Some(props) = props {
            ev.saw_properties = true;
            for (k, ps) in props {
                ev.declared.insert(k.clone());
                if let Some(val) = m.get(k) {
                    let child = format!("{at}/{}", escape(k));
                    if self.mode.request && self.is_read_only(ps) {
                        errs.push(format!(
                            "{}: read-only property must not be sent in a request",
                            ptr(&child)
                        ));
                    }
                    self.instance(ps, val, &child, depth + 1, errs);
                }
            }
        }
        if let Some(ap) = s.get("additionalProperties") {
            ev.saw_additional = true;
            for (k, val) in m {
                if props.is_some_and(|p| p.contains_key(k)) {
                    continue;
                }
                match ap {
                    Value::Bool(false) => {
                        errs.push(format!("{}: additional property '{k}' is not allowed", ptr(at)));
                    }
                    Value::Object(_) => {
                        self.instance(ap, val, &format!("{at}/{}", escape(k)), depth + 1, errs);
                    }
                    _ => {}
                }
            }
        }
    }

    fn is_read_only(&self, schema: &'a Value) -> bool {
        self.resolve(schema)
            .ok()
            .and_then(|s| s.get("readOnly"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

fn number_checks(s: &Map<String, Value>, v: &Value, at: &str, errs: &mut Vec<String>) {
    let Some(x) = v.as_f64() else { return };
    let excl = |k: &str| s.get(k).and_then(Value::as_bool).unwrap_or(false);
    if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
        if x < min || (excl("exclusiveMinimum") && x == min) {
            errs.push(format!("{}: {v} is below the minimum {min}", ptr(at)));
        }
    }
    if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
        if x > max || (excl("exclusiveMaximum") && x == max) {
            errs.push(format!("{}: {v} is above the maximum {max}", ptr(at)));
        }
    }
    if let Some(min) = s.get("exclusiveMinimum").and_then(Value::as_f64) {
        if x <= min {
            errs.push(format!("{}: {v} must be greater than {min}", ptr(at)));
        }
    }
    if let Some(max) = s.get("exclusiveMaximum").and_then(Value::as_f64) {
        if x >= max {
            errs.push(format!("{}: {v} must be less than {max}", ptr(at)));
        }
    }
    if let Some(m) = s.get("multipleOf").and_then(Value::as_f64) {
        if m > 0.0 {
            let q = x / m;
            if (q - q.round()).abs() > 1e-9 {
                errs.push(format!("{}: {v} is not a multiple of {m}", ptr(at)));
            }
        }
    }
}

fn push_unique(out: &mut Vec<String>, t: &str) {
    if !out.iter().any(|x| x == t) {
        out.push(t.to_string());
    }
}

fn ptr(at: &str) -> &str {
    if at.is_empty() {
        "/"
    } else {
        at
    }
}

fn escape(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

pub fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => is_integer(v),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "null" => v.is_null(),
        _ => true,
    }
}

fn is_integer(v: &Value) -> bool {
    v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.is_finite() && f.fract() == 0.0)
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// JSON equality with numbers compared by value (1 == 1.0).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(p), Some(q)) => p == q,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, p)| y.get(k).is_some_and(|q| json_eq(p, q)))
        }
        _ => a == b,
    }
}

/// RFC 1123 host name (no trailing dot, labels 1..=63 of letters, digits, '-').
pub fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// RFC 3339 `date-time`, e.g. `2017-03-11T18:01:43.054409Z` or `...+02:00`.
pub fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<u32>().ok()).unwrap_or(99);
    if b.len() < 20 || !digits(0..4) || b[4] != b'-' || !digits(5..7) || b[7] != b'-' || !digits(8..10) {
        return false;
    }
    if !matches!(b[10], b'T' | b't' | b' ') || !digits(11..13) || b[13] != b':' || !digits(14..16) || b[16] != b':' {
        return false;
    }
    if !digits(17..19) || !(1..=12).contains(&num(5..7)) || !(1..=31).contains(&num(8..10)) {
        return false;
    }
    if num(11..13) > 23 || num(14..16) > 59 || num(17..19) > 60 {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match &s[i..] {
        "Z" | "z" => true,
        off => {
            let o = off.as_bytes();
            o.len() == 6
                && matches!(o[0], b'+' | b'-')
                && o[1..3].iter().all(u8::is_ascii_digit)
                && o[3] == b':'
                && o[4..6].iter().all(u8::is_ascii_digit)
        }
    }
}
