//! `--format` as Docker's: Go templates (through the `gtmpl` crate) over
//! the JSON pier's API returns, with Docker's extra functions (`json`,
//! `join`, `lower`, `upper`, `title`) and the `table` directive (a header
//! row, cells aligned); `json` alone prints one JSON object per line.
use anyhow::{Context as _, bail};
use gtmpl::{Context, Template, Value};
use gtmpl_value::{FuncError, Number};

/// serde_json → gtmpl.
fn to_gtmpl(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Value::Number(Number::from(u)),
            (_, Some(i), _) => Value::Number(Number::from(i)),
            (_, _, Some(f)) => Value::Number(Number::from(f)),
            _ => Value::Nil,
        },
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(to_gtmpl).collect()),
        serde_json::Value::Object(o) => {
            Value::Map(o.iter().map(|(k, v)| (k.clone(), to_gtmpl(v))).collect())
        }
    }
}

/// gtmpl → serde_json (for `{{json .X}}`).
fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::NoValue | Value::Nil | Value::Function(_) => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Number(n) => n
            .as_u64()
            .map(serde_json::Value::from)
            .or_else(|| n.as_i64().map(serde_json::Value::from))
            .or_else(|| n.as_f64().map(serde_json::Value::from))
            .unwrap_or(serde_json::Value::Null),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        Value::Object(o) | Value::Map(o) => {
            let m: std::collections::BTreeMap<_, _> =
                o.iter().map(|(k, v)| (k.clone(), to_json(v))).collect();
            serde_json::json!(m)
        }
    }
}

fn arg<'a>(name: &str, args: &'a [Value], n: usize) -> Result<&'a Value, FuncError> {
    if args.len() != n {
        return Err(FuncError::ExactlyXArgs(name.into(), n));
    }
    Ok(&args[0])
}

fn json(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(to_json(arg("json", args, 1)?).to_string()))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(text(arg("lower", args, 1)?).to_lowercase()))
}

fn upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(text(arg("upper", args, 1)?).to_uppercase()))
}

fn title(args: &[Value]) -> Result<Value, FuncError> {
    let s = text(arg("title", args, 1)?);
    let mut c = s.chars();
    Ok(Value::String(match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => s,
    }))
}

fn join(args: &[Value]) -> Result<Value, FuncError> {
    if args.len() != 2 {
        return Err(FuncError::ExactlyXArgs("join".into(), 2));
    }
    let Value::Array(a) = &args[0] else {
        return Err(FuncError::UnableToConvertFromValue);
    };
    Ok(Value::String(
        a.iter().map(text).collect::<Vec<_>>().join(&text(&args[1])),
    ))
}

/// A parsed `--format`.
pub enum Format {
    /// One JSON object per line.
    Json,
    /// A template; with `table`, its header row.
    Template {
        tmpl: Box<Template>,
        header: Option<Vec<String>>,
    },
}

/// Docker's header for a field of a list (`.ID` → `NETWORK ID` for
/// networks): `headers` maps field names; others are upper-cased.
fn header_of(cell: &str, headers: &[(&str, &str)]) -> String {
    let mut out = cell.to_string();
    let mut from = 0;
    while let Some(i) = out[from..].find("{{") {
        let start = from + i;
        let Some(j) = out[start..].find("}}") else {
            break;
        };
        let inner = out[start + 2..start + j].trim().to_string();
        let name = inner.trim_start_matches('.');
        let h = headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| name.to_uppercase());
        out.replace_range(start..start + j + 2, &h);
        from = start + h.len();
    }
    out
}

impl Format {
    /// Parse `--format TEMPLATE`; `headers` name the columns of `table`.
    pub fn parse(s: &str, headers: &[(&str, &str)]) -> anyhow::Result<Format> {
        if s.trim() == "json" {
            return Ok(Format::Json);
        }
        let (body, header) = match s.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                let body = rest.trim_start().replace("\\t", "\t");
                if body.is_empty() {
                    bail!(
                        "template parsing error: `table` needs a template, e.g. table {{{{.Name}}}}"
                    );
                }
                let h = body.split('\t').map(|c| header_of(c, headers)).collect();
                (body, Some(h))
            }
            _ => (s.replace("\\t", "\t").replace("\\n", "\n"), None),
        };
        let mut tmpl = Template::default();
        tmpl.add_funcs(&[
            ("json", json as gtmpl_value::Func),
            ("lower", lower),
            ("upper", upper),
            ("title", title),
            ("join", join),
        ]);
        tmpl.parse(body.as_str())
            .map_err(|e| anyhow::anyhow!("template parsing error: {e}"))?;
        Ok(Format::Template {
            tmpl: Box::new(tmpl),
            header,
        })
    }

    /// One item as its line.
    pub fn render(&self, v: &serde_json::Value) -> anyhow::Result<String> {
        match self {
            Format::Json => Ok(v.to_string()),
            Format::Template { tmpl, .. } => tmpl
                .render(&Context::from(to_gtmpl(v)))
                .context("executing the --format template"),
        }
    }

    /// Every item, each on its line (aligned under a header with `table`).
    pub fn print_all(&self, items: &[serde_json::Value]) -> anyhow::Result<()> {
        let mut lines = Vec::new();
        for v in items {
            lines.push(self.render(v)?);
        }
        match self {
            Format::Template {
                header: Some(h), ..
            } => {
                let rows = lines
                    .iter()
                    .map(|l| l.split('\t').map(str::to_string).collect())
                    .collect();
                let head: Vec<&str> = h.iter().map(String::as_str).collect();
                print!("{}", super::table(&head, rows));
            }
            _ => {
                for l in lines {
                    println!("{l}");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn one(t: &str, v: serde_json::Value) -> String {
        Format::parse(t, &[("ID", "NETWORK ID")])
            .unwrap()
            .render(&v)
            .unwrap()
    }

    #[test]
    fn docker_templates() {
        let v = json!({"Name": "web", "NetworkSettings": {"IPAddress": "172.17.0.2",
            "Networks": {"mynet": {"IPAddress": "10.0.0.2"}}}, "Ports": [1, 2], "Labels": {"a": "b"}});
        assert_eq!(one("{{.Name}}", v.clone()), "web");
        assert_eq!(
            one("{{.NetworkSettings.IPAddress}}", v.clone()),
            "172.17.0.2"
        );
        assert_eq!(
            one(
                "{{(index .NetworkSettings.Networks \"mynet\").IPAddress}}",
                v.clone()
            ),
            "10.0.0.2"
        );
        assert_eq!(
            one(
                "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}} {{end}}",
                v.clone()
            ),
            "mynet=10.0.0.2 "
        );
        assert_eq!(one("{{json .Labels}}", v.clone()), r#"{"a":"b"}"#);
        assert_eq!(one("{{upper .Name}} {{len .Ports}}", v.clone()), "WEB 2");
        assert_eq!(one("json", v.clone()), v.to_string());
        assert!(Format::parse("{{.Name", &[]).is_err());
        assert!(Format::parse("{{nosuchfunc .Name}}", &[]).is_err());
        let Format::Template { header, .. } =
            Format::parse("table {{.ID}}\t{{.Name}}", &[("ID", "NETWORK ID")]).unwrap()
        else {
            panic!()
        };
        assert_eq!(header.unwrap(), ["NETWORK ID", "NAME"]);
    }
}
