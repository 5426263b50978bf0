"""The autoscaler sidecar: Ray 2.60's own v1 autoscaler (`Monitor`) with rayguard's node provider.

`provider` is the `BatchingNodeProvider` Ray loads through its `external` provider type;
`target` is the seam it scales through (`ScaleTarget`), `scaling` the pure rules every target
shares, `kube_target` the RayCluster and its pods through the Kubernetes API, `monitor` the loop
that runs Ray's `Monitor`, and `cli` the `rayguard-node autoscaler` command.
"""
