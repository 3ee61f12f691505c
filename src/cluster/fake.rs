//! An in-process Kubernetes API server that stores objects, for tests without a cluster.
//!
//! [`FakeApiServer`] is the `tower::Service` under a `kube::Client` ([`FakeApiServer::client`]):
//! the requests kube's `Api` builds reach it as they would reach an API server, and its answers
//! go back the same way, failures as `Status` bodies that kube turns into `kube::Error::Api`.
//! Objects are JSON values in a `BTreeMap` keyed by [`ObjectKey`] (API version, resource
//! plural, namespace, name). Every write takes the next `resourceVersion` from one counter,
//! as etcd's revision does.
//!
//! Served: GET one, LIST with an equality-based `labelSelector`, POST (409 AlreadyExists), PUT
//! (409 Conflict when `metadata.resourceVersion` is stale), DELETE (with preconditions), and
//! server-side apply: a PATCH with content type `application/apply-patch+yaml` and a
//! `fieldManager`. Apply creates the object or merges into it what the manager applies, removes
//! what that manager applied last time and no longer does, leaves other managers' fields alone,
//! answers 409 when it would change a field someone else set (unless `force=true`), and leaves
//! `resourceVersion` as it was when nothing changes. Lists are replaced whole, as for atomic
//! lists (the real server merges some lists by key; Lifeboat applies whole objects it owns, so
//! the difference does not show). `GET /api/v1/nodes/NAME/proxy/configz` answers what
//! [`FakeApiServer::set_kubelet_config`] stored, as a kubelet would. What it does not serve, it
//! refuses loudly instead of half-serving: other PATCHes answer 405; watches, other
//! subresources, `dryRun`, `fieldSelector` and set-based selectors answer 400. Resources named
//! with [`FakeApiServer::forbid`] answer 403, as without RBAC permission.
//!
//! Tests read and write objects directly with [`FakeApiServer::object`] and
//! [`FakeApiServer::insert`], take the server down with [`FakeApiServer::set_outage`], and
//! make writes race with [`FakeApiServer::hold_next_writes`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use http::{Method, Request, Response, StatusCode};
use kube::Resource;
use kube::client::Body;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tokio::sync::Barrier;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where an object is stored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectKey {
    /// `v1` for the core group, else `group/version`: `coordination.k8s.io/v1`.
    pub api_version: String,
    /// The resource's plural: `leases`.
    pub plural: String,
    /// `None` for cluster-scoped resources.
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    /// The key of an object of type `K`.
    pub fn of<K: Resource<DynamicType = ()>>(namespace: Option<&str>, name: &str) -> ObjectKey {
        ObjectKey {
            api_version: K::api_version(&()).into_owned(),
            plural: K::plural(&()).into_owned(),
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        }
    }
}

/// How the fake fails every request while it is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// Every request is answered 503 ServiceUnavailable, as by a load balancer with no API
    /// server behind it.
    Unavailable,
    /// Every request fails without an answer, as on a refused connection.
    Unreachable,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<ObjectKey, Value>,
    /// The last `resourceVersion` given out.
    revision: u64,
    outage: Option<Outage>,
    /// How many more writes wait at `barrier`.
    held_writes: usize,
    barrier: Option<Arc<Barrier>>,
    /// What each field manager last applied to each object (server-side apply).
    applied: BTreeMap<(ObjectKey, String), Value>,
    /// The kubelet configuration each node's `configz` answers.
    kubelet_configs: BTreeMap<String, Value>,
    /// Resources (`nodes/proxy`, `pods`...) answered 403.
    forbidden: Vec<String>,
}

/// An API server in memory. Clones share the same objects.
#[derive(Debug, Clone, Default)]
pub struct FakeApiServer {
    state: Arc<Mutex<State>>,
}

impl FakeApiServer {
    pub fn new() -> FakeApiServer {
        FakeApiServer::default()
    }

    /// A kube client whose requests this server answers, with `default` as its namespace.
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "default")
    }

    /// The stored object, as the API server would return it.
    pub fn object<K>(&self, namespace: Option<&str>, name: &str) -> Option<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let value = self.object_value(&ObjectKey::of::<K>(namespace, name))?;
        Some(serde_json::from_value(value).expect("a stored object reads back as its type"))
    }

    /// Every stored object of a kind, in every namespace, by key.
    pub fn objects<K>(&self) -> Vec<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let (api_version, plural) = (K::api_version(&()).into_owned(), K::plural(&()).into_owned());
        self.lock()
            .objects
            .iter()
            .filter(|(key, _)| key.api_version == api_version && key.plural == plural)
            .map(|(_, value)| serde_json::from_value(value.clone()).expect("a stored object reads back as its type"))
            .collect()
    }

    pub fn object_value(&self, key: &ObjectKey) -> Option<Value> {
        self.lock().objects.get(key).cloned()
    }

    /// Stores an object as it is, bypassing every check, and returns it as stored (with a new
    /// `resourceVersion`, and a `uid` if it had none).
    pub fn insert<K>(&self, object: &K) -> K
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let meta = object.meta();
        let key = ObjectKey::of::<K>(
            meta.namespace.as_deref(),
            meta.name.as_deref().expect("an object to insert has a name"),
        );
        let value = serde_json::to_value(object).expect("an object serializes");
        serde_json::from_value(self.insert_value(key, value)).expect("a stored object reads back as its type")
    }

    /// Stores a JSON object under `key`, bypassing every check; see [`FakeApiServer::insert`].
    pub fn insert_value(&self, key: ObjectKey, mut value: Value) -> Value {
        let mut state = self.lock();
        let revision = state.next_revision();
        let metadata = metadata_mut(&mut value);
        metadata.insert("name".into(), key.name.clone().into());
        if let Some(namespace) = &key.namespace {
            metadata.insert("namespace".into(), namespace.clone().into());
        }
        metadata.insert("resourceVersion".into(), revision.to_string().into());
        metadata.entry("uid").or_insert_with(|| uid(revision).into());
        state.objects.insert(key, value.clone());
        value
    }

    /// Removes an object, bypassing every check, as someone deleting it by hand would.
    pub fn clear(&self, key: ObjectKey) {
        let mut state = self.lock();
        state.objects.remove(&key);
        state.applied.retain(|(k, _), _| *k != key);
    }

    /// Takes the server down (every request fails as `outage` says) or, with `None`, brings
    /// it back.
    pub fn set_outage(&self, outage: Option<Outage>) {
        self.lock().outage = outage;
    }

    /// Holds each of the next `count` writes (POST, PUT, PATCH, DELETE) until all `count` have
    /// arrived, then lets them through one at a time: clients that read the same
    /// `resourceVersion` then write race as they would on a busy API server.
    pub fn hold_next_writes(&self, count: usize) {
        let mut state = self.lock();
        state.held_writes = count;
        state.barrier = Some(Arc::new(Barrier::new(count)));
    }

    /// What `GET /api/v1/nodes/NODE/proxy/configz` answers: `{"kubeletconfig": config}`.
    pub fn set_kubelet_config(&self, node: &str, config: Value) {
        self.lock().kubelet_configs.insert(node.to_string(), config);
    }

    /// Answers every request for `resource` (a plural such as `pods`, or `nodes/proxy`) 403
    /// Forbidden, as for a service account without that permission.
    pub fn forbid(&self, resource: &str) {
        self.lock().forbidden.push(resource.to_string());
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake API server lock")
    }

    async fn serve(self, request: Request<Body>) -> Result<Response<Body>, BoxError> {
        let outage = self.lock().outage;
        match outage {
            Some(Outage::Unreachable) => return Err("connection refused: the fake API server is down".into()),
            Some(Outage::Unavailable) => {
                let failure =
                    Failure::new(503, "ServiceUnavailable", "the server is currently unable to handle the request");
                return Ok(failure.response());
            }
            None => {}
        }
        let (parts, body) = request.into_parts();
        let body = body.collect_bytes().await?;
        if parts.method != Method::GET {
            let barrier = self.held_write();
            if let Some(barrier) = barrier {
                barrier.wait().await;
            }
        }
        let content_type =
            parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let query: BTreeMap<String, String> =
            form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes()).into_owned().collect();
        let answer = Route::parse(parts.uri.path())
            .and_then(|route| self.handle(&parts.method, &route, &query, content_type, &body));
        Ok(match answer {
            Ok((status, value)) => json_response(status, &value),
            Err(failure) => failure.response(),
        })
    }

    /// The barrier this write waits at, if writes are being held.
    fn held_write(&self) -> Option<Arc<Barrier>> {
        let mut state = self.lock();
        if state.held_writes == 0 {
            return None;
        }
        state.held_writes -= 1;
        let barrier = state.barrier.clone();
        if state.held_writes == 0 {
            state.barrier = None;
        }
        barrier
    }

    /// Answers one request: the status and body of a success, or a failure.
    fn handle(
        &self,
        method: &Method,
        route: &Route,
        query: &BTreeMap<String, String>,
        content_type: &str,
        body: &[u8],
    ) -> Result<(StatusCode, Value), Failure> {
        for unsupported in ["watch", "dryRun", "fieldSelector"] {
            if query.contains_key(unsupported) {
                return Err(Failure::bad_request(format!("{unsupported} is not supported by the fake API server")));
            }
        }
        let resource = match &route.subresource {
            Some(sub) => format!("{}/{sub}", route.plural),
            None => route.plural.clone(),
        };
        if self.lock().forbidden.contains(&resource) {
            return Err(Failure::new(
                403,
                "Forbidden",
                format!("{resource} is forbidden: the fake API server was told to refuse it"),
            ));
        }
        if let Some(sub) = &route.subresource {
            return match (method, route.plural.as_str(), sub.as_str(), &route.name, route.rest.as_deref()) {
                (&Method::GET, "nodes", "proxy", Some(node), Some("configz")) => {
                    let config = self.lock().kubelet_configs.get(node).cloned();
                    config.map(|c| (StatusCode::OK, json!({ "kubeletconfig": c }))).ok_or_else(|| {
                        Failure::new(404, "NotFound", format!("the kubelet of node {node} has no configz"))
                    })
                }
                _ => Err(Failure::bad_request(format!("subresource {sub} is not supported by the fake API server"))),
            };
        }
        match (method, &route.name) {
            (&Method::PATCH, Some(name)) if content_type.starts_with("application/apply-patch") => {
                let Some(manager) = query.get("fieldManager").filter(|m| !m.is_empty()) else {
                    return Err(Failure::new(
                        422,
                        "Invalid",
                        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                    ));
                };
                let force = query.get("force").is_some_and(|f| f == "true");
                self.apply(route, name, parse_object(body)?, manager, force)
            }
            (&Method::GET, Some(name)) => self.get(route, name),
            (&Method::GET, None) => self.list(route, query.get("labelSelector").map(String::as_str)),
            (&Method::POST, None) => self.create(route, parse_object(body)?),
            (&Method::PUT, Some(name)) => self.replace(route, name, parse_object(body)?),
            (&Method::DELETE, Some(name)) => self.delete(route, name, body),
            (method, _) => Err(Failure::new(
                405,
                "MethodNotAllowed",
                format!("{method} on {} is not supported by the fake API server", route.resource()),
            )),
        }
    }

    fn get(&self, route: &Route, name: &str) -> Result<(StatusCode, Value), Failure> {
        let object = self.lock().objects.get(&route.key(name)).cloned().ok_or_else(|| route.not_found(name))?;
        Ok((StatusCode::OK, object))
    }

    fn list(&self, route: &Route, selector: Option<&str>) -> Result<(StatusCode, Value), Failure> {
        let selector = selector.map(Selector::parse).transpose()?.unwrap_or_default();
        let state = self.lock();
        let items: Vec<Value> = state
            .objects
            .iter()
            .filter(|(key, _)| {
                key.api_version == route.api_version
                    && key.plural == route.plural
                    && (route.namespace.is_none() || key.namespace == route.namespace)
            })
            .map(|(_, object)| object)
            .filter(|object| selector.matches(object))
            .cloned()
            .collect();
        let kind =
            items.first().and_then(|o| o["kind"].as_str()).map_or_else(|| "List".to_string(), |k| format!("{k}List"));
        let list = json!({
            "apiVersion": route.api_version,
            "kind": kind,
            "metadata": { "resourceVersion": state.revision.to_string() },
            "items": items,
        });
        Ok((StatusCode::OK, list))
    }

    fn create(&self, route: &Route, mut object: Value) -> Result<(StatusCode, Value), Failure> {
        route.check_namespace(&object)?;
        let mut state = self.lock();
        let metadata = metadata_mut(&mut object);
        let name = match (
            metadata.get("name").and_then(Value::as_str),
            metadata.get("generateName").and_then(Value::as_str),
        ) {
            (Some(name), _) if !name.is_empty() => name.to_string(),
            (_, Some(prefix)) if !prefix.is_empty() => format!("{prefix}{:05}", state.revision + 1),
            _ => {
                return Err(Failure::new(
                    422,
                    "Invalid",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
        };
        let key = route.key(&name);
        if state.objects.contains_key(&key) {
            return Err(Failure::new(409, "AlreadyExists", format!("{} {name:?} already exists", route.resource()))
                .with_details(route, &name));
        }
        let revision = state.next_revision();
        metadata.insert("name".into(), name.into());
        if let Some(namespace) = &route.namespace {
            metadata.insert("namespace".into(), namespace.clone().into());
        }
        metadata.insert("resourceVersion".into(), revision.to_string().into());
        metadata.insert("uid".into(), uid(revision).into());
        if let Some(fields) = object.as_object_mut() {
            fields.entry("apiVersion").or_insert_with(|| route.api_version.clone().into());
        }
        state.objects.insert(key, object.clone());
        Ok((StatusCode::CREATED, object))
    }

    fn replace(&self, route: &Route, name: &str, mut object: Value) -> Result<(StatusCode, Value), Failure> {
        let mut state = self.lock();
        let key = route.key(name);
        let stored = state.objects.get(&key).ok_or_else(|| route.not_found(name))?;
        route.check_namespace(&object)?;
        if let Some(given) = object["metadata"]["name"].as_str().filter(|given| *given != name) {
            return Err(Failure::bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            )));
        }
        let stored_version = stored["metadata"]["resourceVersion"].clone();
        let given_version = &object["metadata"]["resourceVersion"];
        if !given_version.is_null() && *given_version != stored_version {
            return Err(route.conflict(name));
        }
        let stored_uid = stored["metadata"]["uid"].clone();
        let revision = state.next_revision();
        let metadata = metadata_mut(&mut object);
        metadata.insert("name".into(), name.into());
        if let Some(namespace) = &route.namespace {
            metadata.insert("namespace".into(), namespace.clone().into());
        }
        metadata.insert("resourceVersion".into(), revision.to_string().into());
        metadata.insert("uid".into(), stored_uid);
        state.objects.insert(key, object.clone());
        Ok((StatusCode::OK, object))
    }

    fn delete(&self, route: &Route, name: &str, body: &[u8]) -> Result<(StatusCode, Value), Failure> {
        let options = if body.is_empty() { Value::Null } else { parse_object(body)? };
        let mut state = self.lock();
        let key = route.key(name);
        let stored = state.objects.get(&key).ok_or_else(|| route.not_found(name))?;
        for field in ["resourceVersion", "uid"] {
            let expected = &options["preconditions"][field];
            if !expected.is_null() && *expected != stored["metadata"][field] {
                return Err(route.conflict(name));
            }
        }
        let object = state.objects.remove(&key).expect("the object was just read");
        state.applied.retain(|(k, _), _| *k != key);
        state.next_revision();
        Ok((StatusCode::OK, object))
    }

    /// Server-side apply of `applied` by `manager`; see the module's documentation.
    fn apply(
        &self,
        route: &Route,
        name: &str,
        applied: Value,
        manager: &str,
        force: bool,
    ) -> Result<(StatusCode, Value), Failure> {
        route.check_namespace(&applied)?;
        for field in ["apiVersion", "kind"] {
            if applied[field].as_str().is_none_or(str::is_empty) {
                return Err(Failure::bad_request(format!("{field} must be set in an apply patch")));
            }
        }
        if let Some(given) = applied["metadata"]["name"].as_str().filter(|given| *given != name) {
            return Err(Failure::bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            )));
        }
        let mut state = self.lock();
        let key = route.key(name);
        let previous = state.applied.get(&(key.clone(), manager.to_string())).cloned().unwrap_or(Value::Null);
        let (status, mut object) = match state.objects.get(&key) {
            None => (StatusCode::CREATED, applied.clone()),
            Some(stored) => {
                if !force {
                    let mut conflicts = Vec::new();
                    conflicting_fields(stored, &applied, &previous, "", &mut conflicts);
                    if !conflicts.is_empty() {
                        return Err(Failure::new(
                            409,
                            "Conflict",
                            format!(
                                "Apply failed with {} conflict(s): {}; apply with force to take them over",
                                conflicts.len(),
                                conflicts.join(", ")
                            ),
                        )
                        .with_details(route, name));
                    }
                }
                let mut merged = stored.clone();
                remove_dropped(&mut merged, &previous, &applied);
                merge_into(&mut merged, &applied);
                (StatusCode::OK, merged)
            }
        };
        // Fields this manager now sets are no longer another manager's.
        for ((k, m), other) in state.applied.iter_mut() {
            if *k == key && m != manager {
                remove_set(other, &applied);
            }
        }
        state.applied.insert((key.clone(), manager.to_string()), applied);
        let stored = state.objects.get(&key).cloned();
        let metadata = metadata_mut(&mut object);
        metadata.insert("name".into(), name.into());
        if let Some(namespace) = &route.namespace {
            metadata.insert("namespace".into(), namespace.clone().into());
        }
        match &stored {
            Some(stored) => {
                for field in ["uid", "resourceVersion", "generation", "creationTimestamp"] {
                    metadata.insert(field.into(), stored["metadata"][field].clone());
                }
                if object == *stored {
                    return Ok((StatusCode::OK, object));
                }
                if object["spec"] != stored["spec"] {
                    let generation = stored["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                    metadata_mut(&mut object).insert("generation".into(), generation.into());
                }
            }
            None => {
                metadata.insert("generation".into(), 1.into());
                metadata.insert("creationTimestamp".into(), "2026-01-01T00:00:00Z".into());
            }
        }
        let revision = state.next_revision();
        let metadata = metadata_mut(&mut object);
        metadata.insert("resourceVersion".into(), revision.to_string().into());
        if stored.is_none() {
            metadata.insert("uid".into(), uid(revision).into());
        }
        let managers: Vec<Value> = state
            .applied
            .keys()
            .filter(|(k, _)| *k == key)
            .map(|(_, m)| json!({ "manager": m, "operation": "Apply", "apiVersion": route.api_version }))
            .collect();
        metadata.insert("managedFields".into(), managers.into());
        state.objects.insert(key, object.clone());
        Ok((status, object))
    }
}

/// Server-side apply's field paths that `applied` would change in `stored` although this
/// manager did not set them before (`previous`): somebody else owns them.
fn conflicting_fields(stored: &Value, applied: &Value, previous: &Value, path: &str, out: &mut Vec<String>) {
    match (stored, applied) {
        (Value::Object(s), Value::Object(a)) => {
            for (k, v) in a {
                if path.is_empty() && (k == "metadata" || k == "apiVersion" || k == "kind") {
                    continue;
                }
                if let Some(sv) = s.get(k) {
                    conflicting_fields(sv, v, previous.get(k).unwrap_or(&Value::Null), &format!("{path}.{k}"), out);
                }
            }
        }
        (s, a) if !s.is_null() && s != a && previous.is_null() => out.push(path.to_string()),
        _ => {}
    }
}

/// Removes from `object` the fields `previous` applied that `now` no longer applies.
fn remove_dropped(object: &mut Value, previous: &Value, now: &Value) {
    let (Value::Object(o), Value::Object(p)) = (object, previous) else { return };
    for (k, pv) in p {
        match now.get(k) {
            None => {
                o.remove(k);
            }
            Some(nv) if pv.is_object() && nv.is_object() => {
                if let Some(ov) = o.get_mut(k) {
                    remove_dropped(ov, pv, nv);
                }
            }
            Some(_) => {}
        }
    }
}

/// Deep-merges `applied` into `object`: maps field by field, everything else replaced.
fn merge_into(object: &mut Value, applied: &Value) {
    match (object, applied) {
        (Value::Object(o), Value::Object(a)) => {
            for (k, v) in a {
                match o.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge_into(existing, v),
                    _ => {
                        o.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (object, applied) => *object = applied.clone(),
    }
}

/// Removes from another manager's applied configuration the fields `taken` sets.
fn remove_set(config: &mut Value, taken: &Value) {
    let (Value::Object(c), Value::Object(t)) = (config, taken) else { return };
    for (k, tv) in t {
        let nested = matches!(c.get(k), Some(Value::Object(_))) && tv.is_object();
        if nested {
            remove_set(c.get_mut(k).expect("checked above"), tv);
        } else {
            c.remove(k);
        }
    }
}

impl State {
    fn next_revision(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }
}

impl tower::Service<Request<Body>> for FakeApiServer {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        Box::pin(self.clone().serve(request))
    }
}

/// What a request's path names: `/api/v1/namespaces/NS/PLURAL/NAME` or
/// `/apis/GROUP/VERSION/PLURAL/NAME`, the namespace and name each optional.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    /// Empty for the core group.
    pub group: String,
    pub api_version: String,
    pub plural: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// `proxy` in `nodes/NAME/proxy/configz`.
    pub subresource: Option<String>,
    /// What follows the subresource: `configz`.
    pub rest: Option<String>,
}

impl Route {
    fn parse(path: &str) -> Result<Route, Failure> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, api_version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => (String::new(), (*version).to_string(), rest),
            ["apis", group, version, rest @ ..] => ((*group).to_string(), format!("{group}/{version}"), rest),
            _ => return Err(Failure::not_found_path(path)),
        };
        // `namespaces/NS/PLURAL...` is a namespaced resource; `namespaces` or `namespaces/NAME`
        // alone is the cluster-scoped Namespace resource.
        let (namespace, rest) = match rest {
            ["namespaces", namespace, rest @ ..] if !rest.is_empty() => (Some((*namespace).to_string()), rest),
            _ => (None, rest),
        };
        let (plural, name, subresource, after) = match rest {
            [plural] => (*plural, None, None, None),
            [plural, name] => (*plural, Some((*name).to_string()), None, None),
            [plural, name, subresource, after @ ..] => (
                *plural,
                Some((*name).to_string()),
                Some((*subresource).to_string()),
                (!after.is_empty()).then(|| after.join("/")),
            ),
            [] => return Err(Failure::not_found_path(path)),
        };
        if plural.is_empty() || name.as_deref() == Some("") {
            return Err(Failure::not_found_path(path));
        }
        Ok(Route { group, api_version, plural: plural.to_string(), namespace, name, subresource, rest: after })
    }

    fn key(&self, name: &str) -> ObjectKey {
        ObjectKey {
            api_version: self.api_version.clone(),
            plural: self.plural.clone(),
            namespace: self.namespace.clone(),
            name: name.to_string(),
        }
    }

    /// `leases.coordination.k8s.io`, or `configmaps` in the core group: how the API server
    /// names a resource in its messages.
    fn resource(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    fn not_found(&self, name: &str) -> Failure {
        Failure::new(404, "NotFound", format!("{} {name:?} not found", self.resource())).with_details(self, name)
    }

    fn conflict(&self, name: &str) -> Failure {
        Failure::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your \
                 changes to the latest version and try again",
                self.resource()
            ),
        )
        .with_details(self, name)
    }

    fn check_namespace(&self, object: &Value) -> Result<(), Failure> {
        match (&self.namespace, object["metadata"]["namespace"].as_str()) {
            (Some(expected), Some(given)) if expected != given => Err(Failure::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            )),
            _ => Ok(()),
        }
    }
}

/// An equality-based label selector: `a=b,c!=d,e,!f`.
#[derive(Debug, Default)]
struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Debug)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

impl Selector {
    fn parse(text: &str) -> Result<Selector, Failure> {
        if text.contains('(') {
            return Err(Failure::bad_request(format!(
                "set-based label selectors are not supported by the fake API server: {text}"
            )));
        }
        let requirements = text
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(|r| {
                if let Some((k, v)) = split_pair(r, "!=") {
                    Requirement::NotEquals(k, v)
                } else if let Some((k, v)) = split_pair(r, "==").or_else(|| split_pair(r, "=")) {
                    Requirement::Equals(k, v)
                } else if let Some(k) = r.strip_prefix('!') {
                    Requirement::NotExists(k.trim().to_string())
                } else {
                    Requirement::Exists(r.to_string())
                }
            })
            .collect();
        Ok(Selector { requirements })
    }

    /// As the API server does, `k!=v` also selects objects without the label `k`.
    fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.requirements.iter().all(|requirement| match requirement {
            Requirement::Equals(k, v) => labels[k].as_str() == Some(v),
            Requirement::NotEquals(k, v) => labels[k].as_str() != Some(v),
            Requirement::Exists(k) => !labels[k].is_null(),
            Requirement::NotExists(k) => labels[k].is_null(),
        })
    }
}

fn split_pair(requirement: &str, operator: &str) -> Option<(String, String)> {
    let (key, value) = requirement.split_once(operator)?;
    Some((key.trim().to_string(), value.trim().to_string()))
}

/// A failure answered as a Kubernetes `Status`, which kube reads into `kube::Error::Api`.
#[derive(Debug)]
struct Failure {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl Failure {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Failure {
        Failure { code, reason, message: message.into(), details: None }
    }

    fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(400, "BadRequest", message)
    }

    fn not_found_path(path: &str) -> Failure {
        Failure::new(404, "NotFound", format!("the server could not find the requested resource ({path})"))
    }

    fn with_details(mut self, route: &Route, name: &str) -> Failure {
        self.details = Some(json!({ "name": name, "group": route.group, "kind": route.plural }));
        self
    }

    fn response(&self) -> Response<Body> {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        json_response(StatusCode::from_u16(self.code).expect("a valid HTTP status"), &status)
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(value).expect("JSON serializes")))
        .expect("a valid response")
}

fn parse_object(body: &[u8]) -> Result<Value, Failure> {
    match serde_json::from_slice::<Value>(body) {
        Ok(object @ Value::Object(_)) => Ok(object),
        Ok(_) => Err(Failure::bad_request("the request body is not a JSON object")),
        Err(e) => Err(Failure::bad_request(format!("the request body is not JSON: {e}"))),
    }
}

/// The object's `metadata`, created empty if missing.
fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    let fields = object.as_object_mut().expect("objects are JSON objects");
    let metadata = fields.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !metadata.is_object() {
        *metadata = Value::Object(Map::new());
    }
    metadata.as_object_mut().expect("metadata was just made an object")
}

fn uid(revision: u64) -> String {
    format!("00000000-0000-4000-8000-{revision:012}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

    use super::*;

    fn config_map(namespace: &str, name: &str, labels: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                labels: Some(labels.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([("key".to_string(), "value".to_string())])),
            ..ConfigMap::default()
        }
    }

    /// The `Status` kube read from an error answer.
    fn api_error(e: kube::Error) -> (u16, String) {
        match e {
            kube::Error::Api(status) => (status.code, status.reason),
            other => panic!("expected an API error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn writes_store_objects_and_bump_the_resource_version() {
        let server = FakeApiServer::new();
        let api: Api<ConfigMap> = Api::namespaced(server.client(), "ns");
        let created = api.create(&PostParams::default(), &config_map("ns", "one", &[])).await.unwrap();
        let first = created.metadata.resource_version.clone().unwrap();
        assert!(created.metadata.uid.is_some());
        assert_eq!(server.object::<ConfigMap>(Some("ns"), "one"), Some(created.clone()));

        let mut changed = created.clone();
        changed.data = Some(BTreeMap::from([("key".to_string(), "other".to_string())]));
        let replaced = api.replace("one", &PostParams::default(), &changed).await.unwrap();
        let second = replaced.metadata.resource_version.clone().unwrap();
        assert!(second.parse::<u64>().unwrap() > first.parse::<u64>().unwrap());
        assert_eq!(replaced.metadata.uid, created.metadata.uid);
        assert_eq!(api.get("one").await.unwrap(), replaced);

        api.delete("one", &DeleteParams::default()).await.unwrap();
        assert_eq!(api.get_opt("one").await.unwrap(), None);
        assert_eq!(server.object::<ConfigMap>(Some("ns"), "one"), None);
    }

    #[tokio::test]
    async fn failures_arrive_as_kube_api_errors_with_the_api_servers_reasons() {
        let server = FakeApiServer::new();
        let api: Api<ConfigMap> = Api::namespaced(server.client(), "ns");
        assert_eq!(api_error(api.get("missing").await.unwrap_err()), (404, "NotFound".to_string()));

        let created = api.create(&PostParams::default(), &config_map("ns", "one", &[])).await.unwrap();
        let again = api.create(&PostParams::default(), &config_map("ns", "one", &[])).await.unwrap_err();
        assert_eq!(api_error(again), (409, "AlreadyExists".to_string()));

        api.replace("one", &PostParams::default(), &created).await.unwrap();
        let stale = api.replace("one", &PostParams::default(), &created).await.unwrap_err();
        assert_eq!(api_error(stale), (409, "Conflict".to_string()));

        let stale_delete = DeleteParams::default().preconditions(kube::api::Preconditions {
            resource_version: created.metadata.resource_version.clone(),
            uid: None,
        });
        assert_eq!(api_error(api.delete("one", &stale_delete).await.unwrap_err()), (409, "Conflict".to_string()));

        let elsewhere = api.create(&PostParams::default(), &config_map("other", "two", &[])).await.unwrap_err();
        assert_eq!(api_error(elsewhere), (400, "BadRequest".to_string()));

        // Not served: refused, never half-served.
        let merge = api.patch("one", &PatchParams::default(), &Patch::Merge(json!({"data": {}}))).await.unwrap_err();
        assert_eq!(api_error(merge), (405, "MethodNotAllowed".to_string()));
        let status = server
            .client()
            .request_text(http::Request::get("/api/v1/namespaces/ns/pods/p/status").body(vec![]).unwrap())
            .await
            .unwrap_err();
        assert_eq!(api_error(status), (400, "BadRequest".to_string()));
        server.forbid("configmaps");
        assert_eq!(api_error(api.get_opt("one").await.unwrap_err()), (403, "Forbidden".to_string()));
    }

    fn applied(data: &[(&str, &str)]) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": "one", "labels": { "app": "lifeboat" } },
            "data": data.iter().map(|(k, v)| ((*k).to_string(), Value::from(*v))).collect::<Map<String, Value>>(),
        })
    }

    #[tokio::test]
    async fn server_side_apply_creates_merges_prunes_its_own_fields_and_detects_conflicts() {
        let server = FakeApiServer::new();
        let api: Api<ConfigMap> = Api::namespaced(server.client(), "ns");
        let params = PatchParams::apply("lifeboat");
        let created = api.patch("one", &params, &Patch::Apply(applied(&[("a", "1"), ("b", "2")]))).await.unwrap();
        let version = created.metadata.resource_version.clone();
        assert_eq!(created.metadata.managed_fields.as_ref().unwrap()[0].manager.as_deref(), Some("lifeboat"));

        // The same apply again changes nothing, not even the resourceVersion.
        let again = api.patch("one", &params, &Patch::Apply(applied(&[("a", "1"), ("b", "2")]))).await.unwrap();
        assert_eq!(again.metadata.resource_version, version);

        // Another manager's field survives; a field lifeboat stops applying goes.
        let other = PatchParams::apply("kubectl");
        api.patch("one", &other, &Patch::Apply(applied(&[("c", "3")]))).await.unwrap();
        let now = api.patch("one", &params, &Patch::Apply(applied(&[("a", "9")]))).await.unwrap();
        let data = now.data.unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(data["a"], "9");
        assert!(now.metadata.resource_version != version);

        // Changing a field another manager set is a conflict, unless forced.
        let taken = api.patch("one", &params, &Patch::Apply(applied(&[("a", "9"), ("c", "4")]))).await.unwrap_err();
        assert_eq!(api_error(taken), (409, "Conflict".to_string()));
        let force = params.clone().force();
        let forced = api.patch("one", &force, &Patch::Apply(applied(&[("a", "9"), ("c", "4")]))).await.unwrap();
        assert_eq!(forced.data.unwrap()["c"], "4");

        let anonymous = PatchParams { field_manager: None, ..PatchParams::default() };
        let missing = api.patch("one", &anonymous, &Patch::Apply(applied(&[]))).await.unwrap_err();
        assert_eq!(api_error(missing), (422, "Invalid".to_string()));
    }

    #[tokio::test]
    async fn kubelet_configz_through_the_node_proxy() {
        let server = FakeApiServer::new();
        let get = |path: &str| http::Request::get(path).body(Vec::new()).unwrap();
        server.set_kubelet_config("n1", json!({"imageGCHighThresholdPercent": 85}));
        let text = server.client().request_text(get("/api/v1/nodes/n1/proxy/configz")).await.unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["kubeletconfig"]["imageGCHighThresholdPercent"], 85);
        let missing = server.client().request_text(get("/api/v1/nodes/n2/proxy/configz")).await.unwrap_err();
        assert_eq!(api_error(missing).0, 404);
        server.forbid("nodes/proxy");
        let forbidden = server.client().request_text(get("/api/v1/nodes/n1/proxy/configz")).await.unwrap_err();
        assert_eq!(api_error(forbidden).0, 403);
    }

    #[tokio::test]
    async fn list_filters_by_namespace_and_equality_based_label_selector() {
        let server = FakeApiServer::new();
        server.insert(&config_map("a", "one", &[("app", "lifeboat"), ("tier", "cache")]));
        server.insert(&config_map("a", "two", &[("app", "other")]));
        server.insert(&config_map("b", "three", &[("app", "lifeboat")]));
        let names = |list: kube::api::ObjectList<ConfigMap>| -> Vec<String> {
            list.items.into_iter().map(|c| c.metadata.name.unwrap()).collect()
        };
        let in_a: Api<ConfigMap> = Api::namespaced(server.client(), "a");
        let everywhere: Api<ConfigMap> = Api::all(server.client());

        let cases: [(&Api<ConfigMap>, &str, &[&str]); 7] = [
            (&in_a, "", &["one", "two"]),
            (&everywhere, "", &["one", "two", "three"]),
            (&everywhere, "app=lifeboat", &["one", "three"]),
            (&everywhere, "app==lifeboat,tier=cache", &["one"]),
            (&in_a, "app!=lifeboat", &["two"]),
            (&everywhere, "tier", &["one"]),
            (&everywhere, "!tier", &["two", "three"]),
        ];
        for (api, selector, expected) in cases {
            let list = api.list(&ListParams::default().labels(selector)).await.unwrap();
            assert_eq!(names(list), expected, "selector {selector:?}");
        }

        let set_based = everywhere.list(&ListParams::default().labels("app in (lifeboat)")).await.unwrap_err();
        assert_eq!(api_error(set_based), (400, "BadRequest".to_string()));
    }

    #[tokio::test]
    async fn an_outage_fails_every_request_until_it_ends() {
        let server = FakeApiServer::new();
        let api: Api<ConfigMap> = Api::namespaced(server.client(), "ns");
        server.set_outage(Some(Outage::Unavailable));
        assert_eq!(api_error(api.get_opt("one").await.unwrap_err()), (503, "ServiceUnavailable".to_string()));
        server.set_outage(Some(Outage::Unreachable));
        assert!(matches!(api.get_opt("one").await.unwrap_err(), kube::Error::Service(_)));
        server.set_outage(None);
        assert_eq!(api.get_opt("one").await.unwrap(), None);
    }

    #[test]
    fn routes_name_the_resource_namespace_and_object() {
        let route = |group: &str, api_version: &str, plural: &str, namespace: Option<&str>, name: Option<&str>| Route {
            group: group.to_string(),
            api_version: api_version.to_string(),
            plural: plural.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
            subresource: None,
            rest: None,
        };
        let cases = [
            ("/api/v1/namespaces/ns/configmaps", route("", "v1", "configmaps", Some("ns"), None)),
            ("/api/v1/namespaces/ns/configmaps/one", route("", "v1", "configmaps", Some("ns"), Some("one"))),
            ("/api/v1/configmaps", route("", "v1", "configmaps", None, None)),
            ("/api/v1/namespaces", route("", "v1", "namespaces", None, None)),
            ("/api/v1/namespaces/ns", route("", "v1", "namespaces", None, Some("ns"))),
            (
                "/apis/coordination.k8s.io/v1/namespaces/ns/leases/leader",
                route("coordination.k8s.io", "coordination.k8s.io/v1", "leases", Some("ns"), Some("leader")),
            ),
            ("/apis/apps/v1/deployments", route("apps", "apps/v1", "deployments", None, None)),
        ];
        for (path, expected) in cases {
            assert_eq!(Route::parse(path).unwrap(), expected, "{path}");
        }
        for path in ["/", "/healthz"] {
            assert!(Route::parse(path).is_err(), "{path}");
        }
        let proxy = Route::parse("/api/v1/nodes/n1/proxy/configz").unwrap();
        assert_eq!((proxy.subresource.as_deref(), proxy.rest.as_deref()), (Some("proxy"), Some("configz")));
    }
}
