"""iris_preprocess: millimetres to centimetres, one response per request (Triton's python API)."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        # NOTE: the same tensors as config.pbtxt: `repoman validate` checks that they agree.
        config.set_max_batch_size(16)
        config.add_input({"name": "measurements_mm", "data_type": "TYPE_FP32", "dims": [4]})
        config.add_output({"name": "features", "data_type": "TYPE_FP32", "dims": [4]})
        return config

    def execute(self, requests):
        responses = []
        for request in requests:
            millimetres = pb_utils.get_input_tensor_by_name(request, "measurements_mm").as_numpy()
            features = pb_utils.Tensor("features", millimetres / 10)
            responses.append(pb_utils.InferenceResponse(output_tensors=[features]))
        return responses
