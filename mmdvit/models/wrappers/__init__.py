from .sparsity_trainer import SparsityTrainer

__all__ = ['SparsityTrainer']
