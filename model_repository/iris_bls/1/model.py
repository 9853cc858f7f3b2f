"""iris_bls: the iris pipeline as a Python model calling the three members (Triton's BLS).

Every request of a batch runs its three steps as calls to the members; the requests' calls
are in flight together (async_exec, awaited with asyncio.gather), so each member gets them
at once and batches them. A step that fails fails that request alone, with the step's error.
"""

import asyncio

import triton_python_backend_utils as pb_utils

STEPS = (
    ("iris_preprocess", "measurements_mm", "features"),
    ("iris", "features", "probabilities"),
)


class TritonPythonModel:
    async def execute(self, requests):
        return await asyncio.gather(*(self.classify(request) for request in requests))

    async def classify(self, request):
        tensor = pb_utils.get_input_tensor_by_name(request, "measurements_mm")
        for model, input_name, output_name in STEPS:
            step = pb_utils.InferenceRequest(
                model_name=model,
                requested_output_names=[output_name],
                inputs=[pb_utils.Tensor(input_name, tensor.as_numpy())],
            )
            response = await step.async_exec()
            if response.has_error():
                return pb_utils.InferenceResponse(error=response.error())
            tensor = pb_utils.get_output_tensor_by_name(response, output_name)
        last = pb_utils.InferenceRequest(
            model_name="iris_postprocess",
            requested_output_names=["species", "confidence"],
            inputs=[pb_utils.Tensor("probabilities", tensor.as_numpy())],
        )
        response = await last.async_exec()
        if response.has_error():
            return pb_utils.InferenceResponse(error=response.error())
        return pb_utils.InferenceResponse(output_tensors=response.output_tensors())
