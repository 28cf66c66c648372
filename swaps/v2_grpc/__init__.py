"""The V2 inference protocol's gRPC messages and service, generated (`make grpc-stubs`).

`grpc_predict_v2.proto` is KServe's docs/predict-api/v2/grpc_predict_v2.proto (package
`inference`, service `GRPCInferenceService`) as published at kserve/kserve@aaac4e29;
the `_pb2` modules are what grpcio-tools made of it, unedited.

Its messages register under the `inference` package in protobuf's default pool, as
Triton's client (`tritonclient.grpc`) registers its own: one process cannot import both.
The replica imports these; tests talk to it with tritonclient's.
"""
