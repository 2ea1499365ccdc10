"""Python modules generated from proto/ by `make proto` (do not edit them by hand).

`grpc_predict_v2_pb2[_grpc]`: the Open Inference Protocol (KServe V2) gRPC API.
`report_pb2`: raysiege's IntervalReport. Importing this package never imports TensorFlow.
"""
