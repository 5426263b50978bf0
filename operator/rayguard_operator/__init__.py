"""rayguard's kopf operator: RayCluster resources into a Secret, a head Service and Ray pods.

The layers are subpackages (docs/architecture.md): `spec` parses a RayCluster, `build` turns
the model into manifests, `reconcile` observes and acts, `oom` surfaces OOM kills, `kube` is
the only API client, `handlers` is the thin kopf layer, and `local` runs a cluster on one
machine. `kopf run -m rayguard_operator.handlers` registers the handlers; nothing else here
imports kopf, so `rayguard render` and the builders never load it.
"""
