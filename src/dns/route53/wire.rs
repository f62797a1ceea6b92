//! Route 53's REST-XML messages (API version 2013-04-01): the few this
//! provider reads and writes.

use serde::Deserialize;

pub const XMLNS: &str = "https://route53.amazonaws.com/doc/2013-04-01/";

#[derive(Debug, Deserialize)]
pub struct ListZones {
    #[serde(rename = "HostedZones", default)]
    pub zones: Zones,
}

#[derive(Debug, Default, Deserialize)]
pub struct Zones {
    #[serde(rename = "HostedZone", default)]
    pub items: Vec<Zone>,
}

#[derive(Debug, Deserialize)]
pub struct Zone {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Config", default)]
    pub config: Option<ZoneConfig>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ZoneConfig {
    #[serde(rename = "PrivateZone", default)]
    pub private: bool,
}

#[derive(Debug, Deserialize)]
pub struct ListSets {
    #[serde(rename = "ResourceRecordSets", default)]
    pub sets: Sets,
}

#[derive(Debug, Default, Deserialize)]
pub struct Sets {
    #[serde(rename = "ResourceRecordSet", default)]
    pub items: Vec<Set>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Set {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Type")]
    pub rtype: String,
    #[serde(rename = "TTL", default)]
    pub ttl: Option<u32>,
    #[serde(rename = "ResourceRecords", default)]
    pub records: Option<Values>,
    /// Weighted, latency, failover… sets: not this provider's.
    #[serde(rename = "SetIdentifier", default)]
    pub set_identifier: Option<String>,
    #[serde(rename = "AliasTarget", default)]
    pub alias: Option<serde::de::IgnoredAny>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Values {
    #[serde(rename = "ResourceRecord", default)]
    pub items: Vec<Value>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Value {
    #[serde(rename = "Value")]
    pub value: String,
}

#[derive(Debug, Deserialize)]
pub struct ChangeResponse {
    #[serde(rename = "ChangeInfo")]
    pub info: ChangeInfo,
}

#[derive(Debug, Deserialize)]
pub struct ChangeInfo {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Status")]
    pub status: String,
}

#[derive(Debug, Deserialize)]
pub struct ErrorResponse {
    #[serde(rename = "Error")]
    pub error: ErrorBody,
}

#[derive(Debug, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "Code", default)]
    pub code: String,
    #[serde(rename = "Message", default)]
    pub message: String,
}

/// A name as Route 53 writes it (`www.example.com.`, `\052.example.com.`) as
/// the configuration does (`www.example.com`, `*.example.com`).
pub fn plain_name(n: &str) -> String {
    n.trim_end_matches('.').replace("\\052", "*").to_ascii_lowercase()
}

/// Escapes text for an XML element.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// One change of a `ChangeResourceRecordSets` batch.
pub struct SetChange<'a> {
    /// `UPSERT` or `DELETE`.
    pub action: &'static str,
    pub name: &'a str,
    pub rtype: &'a str,
    pub ttl: u32,
    pub values: &'a [String],
}

/// The `ChangeResourceRecordSets` request body.
pub fn change_batch(comment: &str, changes: &[SetChange<'_>]) -> String {
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ChangeResourceRecordSetsRequest xmlns=\"{XMLNS}\">\
         <ChangeBatch><Comment>{}</Comment><Changes>",
        esc(comment)
    );
    for c in changes {
        x += &format!(
            "<Change><Action>{}</Action><ResourceRecordSet><Name>{}.</Name><Type>{}</Type><TTL>{}</TTL>\
             <ResourceRecords>",
            c.action,
            esc(c.name),
            c.rtype,
            c.ttl
        );
        for v in c.values {
            x += &format!("<ResourceRecord><Value>{}</Value></ResourceRecord>", esc(v));
        }
        x += "</ResourceRecords></ResourceRecordSet></Change>";
    }
    x += "</Changes></ChangeBatch></ChangeResourceRecordSetsRequest>";
    x
}

pub fn parse<'de, T: Deserialize<'de>>(body: &'de str) -> Result<T, String> {
    quick_xml::de::from_str(body).map_err(|e| format!("not the XML Route 53 answers with: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_sets_parse_with_their_values_and_odd_sets_are_marked() {
        let body = r#"<?xml version="1.0"?>
<ListResourceRecordSetsResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">
  <ResourceRecordSets>
    <ResourceRecordSet><Name>www.example.com.</Name><Type>A</Type><TTL>60</TTL>
      <ResourceRecords><ResourceRecord><Value>192.0.2.1</Value></ResourceRecord>
      <ResourceRecord><Value>192.0.2.2</Value></ResourceRecord></ResourceRecords></ResourceRecordSet>
    <ResourceRecordSet><Name>\052.example.com.</Name><Type>A</Type><SetIdentifier>eu</SetIdentifier>
      <AliasTarget><DNSName>lb.example.net.</DNSName></AliasTarget></ResourceRecordSet>
  </ResourceRecordSets>
  <IsTruncated>false</IsTruncated><MaxItems>100</MaxItems>
</ListResourceRecordSetsResponse>"#;
        let l: ListSets = parse(body).unwrap();
        assert_eq!(l.sets.items.len(), 2);
        let a = &l.sets.items[0];
        assert_eq!(
            (plain_name(&a.name).as_str(), a.rtype.as_str(), a.ttl),
            ("www.example.com", "A", Some(60))
        );
        let values: Vec<_> = a
            .records
            .as_ref()
            .unwrap()
            .items
            .iter()
            .map(|v| v.value.as_str())
            .collect();
        assert_eq!(values, ["192.0.2.1", "192.0.2.2"]);
        assert_eq!(plain_name(&l.sets.items[1].name), "*.example.com");
        assert!(l.sets.items[1].set_identifier.is_some() && l.sets.items[1].alias.is_some());
    }

    #[test]
    fn errors_and_change_info_parse() {
        let e: ErrorResponse = parse(
            "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>\
             <RequestId>1</RequestId></ErrorResponse>",
        )
        .unwrap();
        assert_eq!(
            (e.error.code.as_str(), e.error.message.as_str()),
            ("Throttling", "Rate exceeded")
        );
        let c: ChangeResponse = parse(
            "<ChangeResourceRecordSetsResponse><ChangeInfo><Id>/change/C1</Id><Status>PENDING</Status>\
             <SubmittedAt>2026-12-02T00:00:00Z</SubmittedAt></ChangeInfo></ChangeResourceRecordSetsResponse>",
        )
        .unwrap();
        assert_eq!((c.info.id.as_str(), c.info.status.as_str()), ("/change/C1", "PENDING"));
        let body = change_batch(
            "by vantage",
            &[SetChange {
                action: "UPSERT",
                name: "www.example.com",
                rtype: "A",
                ttl: 60,
                values: &["192.0.2.1".to_string()],
            }],
        );
        assert!(body.contains(
            "<Action>UPSERT</Action><ResourceRecordSet><Name>www.example.com.</Name><Type>A</Type><TTL>60</TTL>"
        ));
    }
}
