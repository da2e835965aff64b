"""Model side: traversal of decoder blocks, capture of block inputs, Hessian hooks, pipeline."""
