"""The 3D face: EMOCA/DECA encoders, the FLAME head model and DECA-style mesh renders.

Modules, one concern each (import them directly; this package imports nothing, so
``import dpl_assets`` loads no torch):

- :mod:`.emoca`: the EMOCA/DECA encoder model (crops -> FLAME, camera, light codes) and
  the original's temporal smoothing of those codes;
- :mod:`.weights`: checkpoint loading: the safe ``torch.load`` of EMOCA/DECA files and their
  official weights;
- :mod:`.resnet`: the encoders' ResNet-50 backbone (torchvision's when it imports), with
  the hand-written fallback in :mod:`.resnet_torch`;
- :mod:`.safe_pickle`: FLAME's pickles read without chumpy and without running code;
- :mod:`.flame`: FLAME's model files, validated; :mod:`.flame_layer`: posing it (LBS);
- :mod:`.obj`: the head template ``.obj``; :mod:`.camera`: DECA's orthographic camera;
- :mod:`.rasterizer`: triangle rasterization (pytorch3d when it imports), with the
  pure-torch fallback in :mod:`.rasterizer_torch`;
- :mod:`.shading`: vertex normals and spherical-harmonics shading;
- :mod:`.render`: the RenderingNode's normal, UV and mask images.
"""
