//! gRPC request metrics: counts, errors and durations by method, through a tower layer.

use std::pin::Pin;
use std::sync::Arc;

use crate::metrics::{MethodCodeLabel, MethodLabel, Metrics};

/// The gRPC methods, as metric labels (anything else is `other`, so a client cannot create label values).
const METHODS: [&str; 14] = [
    "/baton.v1.RollupService/SubmitBundle",
    "/baton.v1.RollupService/SubmitBundles",
    "/baton.v1.RollupService/GetBundleStatus",
    "/baton.v1.RollupService/GetNonce",
    "/baton.v1.RollupService/ListRollups",
    "/baton.v1.RollupService/StreamBatches",
    "/baton.v1.RollupService/GetBatch",
    "/baton.v1.NodeService/Status",
    "/baton.v1.NodeService/GetValidatorSet",
    "/baton.v1.NodeService/ListEvidence",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

fn method_label(path: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == path)
        .map_or("other", |m| m.rsplit_once('.').map_or(m, |(_, name)| name))
}

fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A tower layer that counts gRPC requests and errors and times them, by method.
#[derive(Clone)]
pub struct GrpcMetricsLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = method_label(req.uri().path());
        let metrics = self.metrics.clone();
        let started = std::time::Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            let label = MethodLabel { method };
            metrics.grpc_requests.get_or_create(&label).inc();
            metrics
                .grpc_duration
                .get_or_create(&label)
                .observe(started.elapsed().as_secs_f64());
            // Errors answered before the body carry their status in the headers (trailers-only responses).
            if let Ok(r) = &res {
                if let Some(code) = r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .filter(|c| *c != 0)
                {
                    metrics
                        .grpc_errors
                        .get_or_create(&MethodCodeLabel {
                            method,
                            code: code_label(tonic::Code::from(code)),
                        })
                        .inc();
                }
            }
            res
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every method the API defines has its own metric label: one missing from the list is counted as `other`,
    /// and its traffic and errors cannot be told apart.
    #[test]
    fn every_rpc_in_the_proto_has_a_metric_label() {
        let proto = include_str!("../../../proto/proto/baton/v1/baton.proto");
        let mut service = "";
        let mut missing = Vec::new();
        for line in proto.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                service = rest.split_whitespace().next().unwrap_or("");
            } else if let Some(rest) = line.strip_prefix("rpc ") {
                let method = rest.split('(').next().unwrap_or("").trim();
                let path = format!("/baton.v1.{service}/{method}");
                if method_label(&path) != format!("{service}/{method}") {
                    missing.push(path);
                }
            }
        }
        assert!(missing.is_empty(), "counted as `other`: {missing:?}");
        assert_eq!(method_label("/baton.v1.RollupService/Nope"), "other");
    }
}
