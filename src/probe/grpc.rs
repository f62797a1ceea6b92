//! gRPC health checks: `grpc.health.v1.Health/Check` on a fresh plaintext
//! HTTP/2 connection per probe; SERVING passes, anything else fails with the
//! status named.

use std::net::SocketAddr;

use tonic::transport::Endpoint;

use crate::proto::health::health_check_response::ServingStatus;
use crate::proto::health::health_client::HealthClient;
use crate::proto::health::HealthCheckRequest;

pub struct GrpcProbe {
    endpoint: Endpoint,
    service: String,
}

impl GrpcProbe {
    pub fn new(addr: SocketAddr, service: &str) -> Result<GrpcProbe, String> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).map_err(|e| format!("grpc {addr}: {e}"))?;
        Ok(GrpcProbe {
            endpoint,
            service: service.to_string(),
        })
    }

    pub async fn run(&self) -> Result<(), String> {
        let channel = self
            .endpoint
            .connect()
            .await
            .map_err(|e| format!("grpc connect to {}: {e}", self.endpoint.uri()))?;
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: self.service.clone(),
            })
            .await
            .map_err(|s| format!("grpc health check: {}: {}", s.code(), s.message()))?
            .into_inner();
        match ServingStatus::try_from(answer.status) {
            Ok(ServingStatus::Serving) => Ok(()),
            Ok(other) => Err(format!("grpc health of {:?}: {}", self.service, other.as_str_name())),
            Err(_) => Err(format!("grpc health: unknown status {}", answer.status)),
        }
    }
}
