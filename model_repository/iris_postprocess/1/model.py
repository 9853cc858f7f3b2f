"""iris_postprocess: the most likely species by name, and its probability (Triton's python API)."""

import numpy as np
import triton_python_backend_utils as pb_utils

SPECIES = np.array([b"setosa", b"versicolor", b"virginica"], dtype=np.object_)


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        # NOTE: the same tensors as config.pbtxt: `repoman validate` checks that they agree.
        config.set_max_batch_size(16)
        config.add_input({"name": "probabilities", "data_type": "TYPE_FP32", "dims": [3]})
        config.add_output({"name": "species", "data_type": "TYPE_STRING", "dims": [1]})
        config.add_output({"name": "confidence", "data_type": "TYPE_FP32", "dims": [1]})
        return config

    def execute(self, requests):
        responses = []
        for request in requests:
            probabilities = pb_utils.get_input_tensor_by_name(request, "probabilities").as_numpy()
            best = probabilities.argmax(axis=1)
            species = pb_utils.Tensor("species", SPECIES[best].reshape(-1, 1))
            confidence = pb_utils.Tensor(
                "confidence", probabilities.max(axis=1, keepdims=True).astype(np.float32)
            )
            responses.append(pb_utils.InferenceResponse(output_tensors=[species, confidence]))
        return responses
