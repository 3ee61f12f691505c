//! A repository's tag list, page by page as the registry's `Link` headers lead, read the way a
//! hostile registry cannot abuse: pages only on the same registry, each at most
//! [`PAGE_LIMIT`] bytes, at most [`MAX_PAGES`] of them and [`MAX_TAGS`] tags in all, and a
//! page that leads back to one already read is an error. A `Link` header that cannot be read
//! is an error too: a tag list is complete or it is not known, never shorter than it is. Names
//! that are not valid tags are left out (they would change the URL they are looked up at).

use std::collections::{BTreeSet, HashSet};

use reqwest::StatusCode;

use super::{Http, Target, Wait, pull_scope, status_error};
use crate::registry::error::{ErrorKind, RegistryError, quoted};

/// The largest tag page read (a page of 1,000 tags is about 130 kB).
const PAGE_LIMIT: usize = 4 << 20;
/// The most pages followed: ten million tags at the page size asked for.
const MAX_PAGES: usize = 10_000;
/// The most tags a repository may list.
const MAX_TAGS: usize = 1_000_000;
/// Tags asked for per page.
const PAGE_SIZE: u32 = 1000;

impl Http {
    /// Every tag of a repository, following `Link` pagination; `None` when the repository
    /// does not exist. A later page that fails is an error, never a shorter list.
    pub async fn list_tags(&self, target: &Target) -> Result<Option<Vec<String>>, RegistryError> {
        let operation = format!("listing tags of {}", target.repository);
        let host = target.host();
        let scope = pull_scope(target);
        let permanent = |message: String| RegistryError::new(ErrorKind::Permanent, &operation, message);
        let first = reqwest::Url::parse(&format!("{}?n={PAGE_SIZE}", target.url("tags/list")))
            .map_err(|e| permanent(format!("{host}: {e}")))?;
        let mut next = Some(first);
        let mut visited = HashSet::new();
        let mut tags = Vec::new();
        let mut invalid = BTreeSet::new();
        #[derive(serde::Deserialize)]
        struct Page {
            tags: Option<Vec<String>>,
        }
        while let Some(url) = next.take() {
            if visited.len() >= MAX_PAGES {
                return Err(permanent(format!("{host} sent more than {MAX_PAGES} tag pages; Lifeboat stops there")));
            }
            visited.insert(url.clone());
            let response = self.send(target, &scope, &operation, Wait::Whole, |c| c.get(url.clone())).await?;
            match response.status() {
                StatusCode::NOT_FOUND if visited.len() == 1 => return Ok(None),
                s if s.is_success() => {}
                _ => return Err(status_error(&operation, host, response, self.timeout).await),
            }
            let link = match response.headers().get(reqwest::header::LINK) {
                None => None,
                Some(value) => {
                    let text =
                        value.to_str().map_err(|_| permanent(format!("{host} sent a Link header that is not text")))?;
                    next_link(text)
                        .map_err(|why| permanent(format!("{host} sent a Link header {why}: {}", quoted(text))))?
                }
            };
            if let Some(link) = link {
                let page = url
                    .join(&link)
                    .map_err(|e| permanent(format!("{host} sent a next-page link `{link}` that is not a URL: {e}")))?;
                // Credentials go with the request: only follow pages on the same registry.
                if page.host_str() != url.host_str() || page.port_or_known_default() != url.port_or_known_default() {
                    return Err(permanent(format!(
                        "{host} sent a next-page link to another host ({})",
                        page.origin().ascii_serialization()
                    )));
                }
                if visited.contains(&page) {
                    return Err(permanent(format!(
                        "{host} sent a next-page link back to a page already read ({}); its tag list never ends",
                        page.path()
                    )));
                }
                next = Some(page);
            }
            let body = self.read_limited(response, PAGE_LIMIT, &operation, host, "a tag page").await?;
            let page: Page = serde_json::from_slice(&body)
                .map_err(|_| permanent(format!("{host} sent a tag list that is not JSON")))?;
            for tag in page.tags.unwrap_or_default() {
                if is_tag(&tag) {
                    tags.push(tag);
                } else {
                    invalid.insert(tag);
                }
            }
            if tags.len() > MAX_TAGS {
                return Err(permanent(format!("{host} lists more than {MAX_TAGS} tags; Lifeboat stops there")));
            }
        }
        if let Some(example) = invalid.first() {
            tracing::warn!(
                repository = %target.repository,
                count = invalid.len(),
                example = %quoted(example),
                "the registry lists names that are not valid tags; they are left out"
            );
        }
        Ok(Some(tags))
    }
}

/// The target of the `rel="next"` link in a `Link` header (`</v2/x/tags/list?last=a&n=1000>;
/// rel="next"`): `Ok(None)` when it has none, `Err` saying what is wrong when it cannot be read
/// or its next link is empty.
fn next_link(header: &str) -> Result<Option<String>, &'static str> {
    let mut rest = header;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return Ok(None);
        }
        let after = rest.strip_prefix('<').ok_or("Lifeboat cannot read")?;
        let end = after.find('>').ok_or("Lifeboat cannot read")?;
        let (target, params) = (&after[..end], &after[end + 1..]);
        // The parameters run to the next link.
        let params_end = params.find('<').unwrap_or(params.len());
        let is_next = params[..params_end].split(';').any(|p| {
            let p = p.trim().to_ascii_lowercase();
            p == "rel=\"next\"" || p == "rel=next"
        });
        if is_next {
            if target.trim().is_empty() {
                return Err("whose next-page link is empty (the page itself)");
            }
            return Ok(Some(target.trim().to_string()));
        }
        rest = &params[params_end..];
    }
}

/// Whether `name` is a tag by the OCI distribution spec: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
fn is_tag(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    first_ok && name.len() <= 128 && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_link_pagination() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?last=t0999&n=1000>; rel="next""#),
            Ok(Some("/v2/a/tags/list?last=t0999&n=1000".to_string()))
        );
        assert_eq!(next_link(r#"<https://x/y>; rel="prev""#), Ok(None));
        assert_eq!(
            next_link(r#"<https://x/p>; rel="prev", <https://x/n?a=1,2>; rel=next"#),
            Ok(Some("https://x/n?a=1,2".to_string()))
        );
        assert_eq!(next_link(""), Ok(None));
    }

    /// Regression: `Link: ><; rel="next"` sliced a string with its start past its end (a
    /// panic); `<>` led back to the page itself forever.
    #[test]
    fn damaged_links_are_errors_not_panics() {
        for header in [r#"><; rel="next""#, r#"<; rel="next""#, r#"abc"#, r#"<a; rel="next""#, "<é>ü<"] {
            assert!(next_link(header).is_err(), "{header}");
        }
        assert_eq!(next_link(r#"<>; rel="next""#), Err("whose next-page link is empty (the page itself)"));
    }

    #[test]
    fn tags_are_what_the_spec_allows() {
        for good in ["1.0", "latest", "_x", "v1.2.3-rc.1", "sha256-abc.sig", &"a".repeat(128)] {
            assert!(is_tag(good), "{good}");
        }
        for bad in ["", ".x", "-x", "a/b", "a?b", "a b", "é", "../x", &"a".repeat(129)] {
            assert!(!is_tag(bad), "{bad}");
        }
    }
}
