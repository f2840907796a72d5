"""Networks: backbones, RCNet (root + contact), METRO, SA-HMR and the baseline branch.

Every method takes `sahmr.models.inputs.FrameInputs` and predicts a
`sahmr.models.inputs.BodyPrediction`; see that module for the shared contract.
"""
