"""The Helm chart `helm/ucloud-tre/`: its values model and the generator of every file that
mirrors an object the Python planners build.

`python -m provisioner.chart` rewrites the generated files (CRDs, admission policies, RBAC,
platform namespaces, the resolver's Corefile, `values.yaml`, `values.schema.json`, and
`templates/_generated.tpl` with the TRE_* environment of the pods); a unit test fails when
the committed chart differs from what it writes. The hand-written templates (Deployments,
Services, NetworkPolicies of the platform's own namespaces, PodDisruptionBudgets) use what
`_generated.tpl` defines, so pod labels, ports and settings are not typed twice.
"""
