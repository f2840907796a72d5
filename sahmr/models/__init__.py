"""Networks: backbones, RCNet (root + contact), METRO, SA-HMR and the baseline branch.

Every method takes `sahmr.records.FrameInputs` and predicts a
`sahmr.records.BodyPrediction`; see that module for the shared records.
"""
