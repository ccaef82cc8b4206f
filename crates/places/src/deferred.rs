//! A provider built on a thread of its own, so a node does not wait for it before it
//! listens. The embedded GeoNames index takes a while to build (about 0.2 s in a release
//! build on a quiet core; seconds in a debug build, or when several nodes start at once on a
//! busy machine), and only WHATSAT needs it: IAMAT, the flood, recovery from the store and
//! the links do not. A WHATSAT that arrives before the provider is ready waits for it;
//! nothing else does.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::Notify;

use super::{
    budget, error_document, Document, NearbyQuery, PlacesFuture, PlacesProvider, PlacesStats,
};

/// `P`, once the thread building it is done.
pub struct Deferred<P> {
    name: &'static str,
    slot: Arc<Slot<P>>,
}

struct Slot<P> {
    /// The provider, or why it could not be built (its build panicked).
    built: OnceLock<Result<P, String>>,
    ready: Notify,
}

impl<P: PlacesProvider + 'static> Deferred<P> {
    /// Starts building the provider `name` with `build` on a thread of its own.
    pub fn build(
        name: &'static str,
        build: impl FnOnce() -> P + Send + 'static,
    ) -> std::io::Result<Deferred<P>> {
        let slot = Arc::new(Slot {
            built: OnceLock::new(),
            ready: Notify::new(),
        });
        let filling = Arc::clone(&slot);
        let builder = move || {
            let began = Instant::now();
            // A build that panics must not leave WHATSATs waiting forever: they get an error
            // document instead (the protocol's "never a hang").
            let built = std::panic::catch_unwind(AssertUnwindSafe(build)).map_err(|panic| {
                herd_os::panics::payload_text(&*panic)
                    .unwrap_or("no message")
                    .to_owned()
            });
            match &built {
                Ok(_) => tracing::info!(
                    "places: {name} ready after {} ms",
                    began.elapsed().as_millis()
                ),
                Err(why) => tracing::error!("places: {name} could not be built: {why}"),
            }
            let _ = filling.built.set(built);
            filling.ready.notify_waiters();
        };
        std::thread::Builder::new()
            .name(format!("places-{name}"))
            .spawn(builder)?;
        Ok(Deferred { name, slot })
    }

    /// The provider once built (waiting for it if need be), or why it could not be.
    async fn ready(&self) -> &Result<P, String> {
        loop {
            // Created before the check: `notify_waiters` wakes every `Notified` that exists
            // when it is called, polled or not, so the wake-up cannot slip between the two.
            let notified = self.slot.ready.notified();
            if let Some(built) = self.slot.built.get() {
                return built;
            }
            notified.await;
        }
    }
}

impl<P: PlacesProvider + 'static> PlacesProvider for Deferred<P> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn nearby(&self, query: NearbyQuery) -> PlacesFuture<'_> {
        Box::pin(async move {
            match self.ready().await {
                Ok(provider) => provider.nearby(query).await,
                Err(why) => Document::render(&error_document(
                    "UNKNOWN_ERROR",
                    &format!(
                        "the {} places provider could not be built: {why}",
                        self.name
                    ),
                )),
            }
        })
    }

    fn spend(&self) -> budget::Spend {
        match self.slot.built.get() {
            Some(Ok(provider)) => provider.spend(),
            _ => budget::Spend::default(),
        }
    }

    fn stats(&self) -> Option<&PlacesStats> {
        match self.slot.built.get() {
            Some(Ok(provider)) => provider.stats(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// Answers every query with its bound, so a test can tell its answer apart.
    struct Echo;

    impl PlacesProvider for Echo {
        fn name(&self) -> &'static str {
            "echo"
        }
        fn nearby(&self, query: NearbyQuery) -> PlacesFuture<'_> {
            Box::pin(async move { Document::render(&serde_json::json!({ "bound": query.bound })) })
        }
    }

    fn query() -> NearbyQuery {
        NearbyQuery {
            lat: 1.0,
            lng: 2.0,
            radius_km: 3.0,
            bound: 7,
        }
    }

    #[tokio::test]
    async fn a_query_waits_until_the_provider_is_built_then_is_answered_by_it() {
        let (release, released) = mpsc::channel::<()>();
        let deferred = Deferred::build("echo", move || {
            released.recv().unwrap();
            Echo
        })
        .unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(100), deferred.nearby(query()));
        assert!(
            waiting.await.is_err(),
            "answered before the provider was built"
        );
        release.send(()).unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(30), deferred.nearby(query()))
            .await
            .expect("no answer after the provider was built");
        assert!(
            answer.as_str().contains("\"bound\": 7"),
            "{}",
            answer.as_str()
        );
    }

    #[tokio::test]
    async fn a_build_that_panics_is_answered_with_an_error_document_not_a_hang() {
        let deferred: Deferred<Echo> =
            Deferred::build("echo", || panic!("index file mangled")).unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(30), deferred.nearby(query()))
            .await
            .expect("hung after a failed build");
        let text = answer.as_str();
        assert!(text.contains("UNKNOWN_ERROR"), "{text}");
        assert!(text.contains("index file mangled"), "{text}");
    }
}
